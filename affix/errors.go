package affix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxRetryAfter caps a server's Retry-After; a larger value is capped and
// the cap noted in APIError.RetryAfterNote.
const MaxRetryAfter = time.Hour

// APIError is a non-200 answer, decoded from the documented error bodies:
// 400 {message, validation_error}, 401 {error, message, code},
// 409 {code, token, error}, 429 {message} + Retry-After, 500 {message}.
// Other statuses and bodies (not JSON, empty, huge) are tolerated: a body
// that is not JSON becomes Message. Every string comes from the server and
// has been sanitized (secrets and API key redacted, control characters
// removed, at most 256 bytes).
//
// The 409's token is an access token and its code an authorization code
// (the spec: "the authorization code insert that caused a conflict"): both
// are credentials, so neither is kept; a 409 keeps only its error.
type APIError struct {
	StatusCode      int
	Message         string // "message" (400, 401, 429, 500, others)
	ValidationError string // "validation_error" (400)
	ErrorType       string // "error" (401 "authentication_error", 409 "conflict")
	Code            string // "code" (401, e.g. "incorrect_username_or_password"); never a 409's
	// RetryAfter is the server's Retry-After (integer seconds or an
	// HTTP-date), at most MaxRetryAfter; valid when HasRetryAfter.
	RetryAfter    time.Duration
	HasRetryAfter bool
	// RetryAfterNote explains a Retry-After header that was ignored
	// (negative, unparsable) or capped; empty otherwise. Safe to log.
	RetryAfterNote string
}

// Error describes the answer: status, then the server's error, code,
// message and validation_error when present, then the Retry-After.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "affix: POST %s: %d", Path, e.StatusCode)
	if t := http.StatusText(e.StatusCode); t != "" {
		b.WriteString(" " + t)
	}
	for _, kv := range [][2]string{{"error", e.ErrorType}, {"code", e.Code}, {"message", e.Message}, {"validation_error", e.ValidationError}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, "; %s: %s", kv[0], kv[1])
		}
	}
	if e.HasRetryAfter {
		fmt.Fprintf(&b, "; retry after %s", e.RetryAfter)
	}
	if e.RetryAfterNote != "" {
		fmt.Fprintf(&b, " (%s)", e.RetryAfterNote)
	}
	return b.String()
}

// TransportError is a request that got no (complete) answer: connection
// refused, reset or dropped, timeout, cancellation. The request may or may
// not have been applied.
type TransportError struct {
	msg        string // sanitized description
	cause      error
	callerDone bool // the caller's context ended (not the request's own timeout)
}

// Error describes the failure without secrets, API key or URL credentials.
func (e *TransportError) Error() string { return "affix: POST " + Path + ": no response: " + e.msg }

// GoString keeps %#v from printing the cause's fields.
func (e *TransportError) GoString() string {
	return "&affix.TransportError{" + strconv.Quote(e.msg) + "}"
}

// Unwrap returns the underlying error (for errors.Is(err,
// context.DeadlineExceeded) and the like). Print the TransportError, not the
// cause: only the TransportError's text is sanitized.
func (e *TransportError) Unwrap() error { return e.cause }

// Timeout reports whether the request ran out of time: its own timeout or
// the caller's deadline.
func (e *TransportError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.Is(e.cause, context.DeadlineExceeded) || (errors.As(e.cause, &t) && t.Timeout())
}

// CallerCanceled reports whether the caller's context ended (cancelled or
// past its deadline) before the answer came, as opposed to the request's
// own timeout or a network failure.
func (e *TransportError) CallerCanceled() bool { return e.callerDone }

// ResponseError is a 200 whose body is not the documented object (not
// JSON, wrong types, too large). The request was probably applied, but what
// Affix holds now is unknown.
type ResponseError struct {
	// Problem says what is wrong with the body; it names keys and JSON
	// types, never values.
	Problem string
}

// Error describes the malformed answer.
func (e *ResponseError) Error() string {
	return "affix: POST " + Path + ": 200 with a malformed body: " + e.Problem
}

// MismatchError is a 200 whose client_secret is not exactly the set sent
// (members missing, extra or repeated; order does not matter). Affix's
// answer is its state now: the caller decides from Contains whether
// aborting is safe.
type MismatchError struct {
	Sent, Got   int   // number of secrets sent and answered
	MissingSent int   // sent secrets absent from the answer
	Unexpected  int   // distinct secrets in the answer that were not sent
	Duplicates  int   // repeated entries in the answer
	Included    []int // indexes (into UpdateRequest.ClientSecret) of the sent secrets the answer holds, ascending
}

// Contains reports whether the i-th secret sent is in Affix's answer.
func (e *MismatchError) Contains(i int) bool {
	for _, j := range e.Included {
		if j == i {
			return true
		}
	}
	return false
}

// Error describes the difference by counts and indexes, never values.
func (e *MismatchError) Error() string {
	in := make([]string, len(e.Included))
	for k, i := range e.Included {
		in[k] = strconv.Itoa(i)
	}
	return fmt.Sprintf("affix: POST %s: 200 but client_secret is not the set sent: sent %d, answer has %d (holds sent [%s]; %d sent missing, %d not sent, %d repeated)",
		Path, e.Sent, e.Got, strings.Join(in, ","), e.MissingSent, e.Unexpected, e.Duplicates)
}

// newTransportError wraps err; what, when set, says which step failed.
func newTransportError(what string, err error, parent context.Context, red func(string) string) *TransportError {
	msg := transportText(err, red)
	if what != "" {
		msg = what + ": " + msg
	}
	return &TransportError{msg: msg, cause: err, callerDone: parent.Err() != nil}
}

// transportText describes a transport error: the url.Error's operation and
// URL (without credentials or query) and its cause, sanitized.
func transportText(err error, red func(string) string) string {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return red(err.Error())
	}
	where := "the Affix API"
	if u, perr := url.Parse(ue.URL); perr == nil {
		u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
		where = red(u.String())
	}
	return fmt.Sprintf("%s %s: %s", ue.Op, where, red(ue.Err.Error()))
}

func newAPIError(resp *http.Response, body []byte, red func(string) string) *APIError {
	e := &APIError{StatusCode: resp.StatusCode}
	var w map[string]json.RawMessage
	if json.Unmarshal(body, &w) == nil && w != nil {
		str := func(k string) string {
			var s string
			if v, ok := w[k]; ok && json.Unmarshal(v, &s) == nil {
				return red(s)
			}
			return ""
		}
		e.Message, e.ValidationError, e.ErrorType = str("message"), str("validation_error"), str("error")
		if resp.StatusCode != http.StatusConflict {
			e.Code = str("code")
		}
		// "token" (409) is never read.
	} else if len(body) > 0 && resp.StatusCode != http.StatusConflict {
		e.Message = red(strings.TrimSpace(string(body)))
	}
	if h := resp.Header.Values("Retry-After"); len(h) > 0 {
		e.RetryAfter, e.HasRetryAfter, e.RetryAfterNote = parseRetryAfter(h[0], time.Now(), red)
	}
	return e
}

// parseRetryAfter reads delay-seconds (the spec's integer) or an HTTP-date
// (RFC 9110 §10.2.3), capped at MaxRetryAfter. It returns the delay, whether
// it is usable, and a note when the header was ignored or capped.
func parseRetryAfter(h string, now time.Time, red func(string) string) (time.Duration, bool, string) {
	h = strings.TrimSpace(h)
	quoted := strconv.Quote(truncate(red(h), 64))
	if digits := strings.TrimPrefix(h, "-"); digits != "" && strings.Trim(digits, "0123456789") == "" {
		if digits != h {
			if strings.Trim(digits, "0") == "" {
				return 0, true, ""
			}
			return 0, false, "negative Retry-After " + quoted + " ignored"
		}
		n, err := strconv.ParseInt(h, 10, 64)
		if err != nil || n > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true, fmt.Sprintf("Retry-After of %s seconds capped at %s", quoted, MaxRetryAfter)
		}
		return time.Duration(n) * time.Second, true, ""
	}
	t, err := http.ParseTime(h)
	if err != nil {
		return 0, false, "unparsable Retry-After " + quoted + " ignored"
	}
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	if d > MaxRetryAfter {
		return MaxRetryAfter, true, fmt.Sprintf("Retry-After date %s capped at %s", t.UTC().Format(time.RFC3339), MaxRetryAfter)
	}
	return d.Round(time.Second), true, ""
}

// Definite reports whether err proves the request was NOT applied: an
// *APIError with status 400, 401, 403, 404 or 422. A *MismatchError is not
// definite by this function; the caller inspects it.
func Definite(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.StatusCode {
	case 400, 401, 403, 404, 422:
		return true
	}
	return false
}

// Transient reports whether err is worth retrying: an *APIError with status
// 408, 409, 425, 429 or 5xx, a *ResponseError, or a *TransportError that
// was not caused by the end of the caller's context (the request's own
// timeout is transient, the caller's cancellation or deadline is not).
func Transient(err error) bool {
	var ae *APIError
	var te *TransportError
	var re *ResponseError
	switch {
	case errors.As(err, &ae):
		switch {
		case ae.StatusCode == 408, ae.StatusCode == 409, ae.StatusCode == 425, ae.StatusCode == 429, ae.StatusCode >= 500 && ae.StatusCode <= 599:
			return true
		}
		return false
	case errors.As(err, &te):
		return !te.callerDone
	case errors.As(err, &re):
		return true
	}
	return false
}

// RetryAfter returns the server's Retry-After (already capped at
// MaxRetryAfter), if the answer carried a usable one.
func RetryAfter(err error) (time.Duration, bool) {
	var ae *APIError
	if errors.As(err, &ae) && ae.HasRetryAfter {
		return ae.RetryAfter, true
	}
	return 0, false
}

// StatusLabel renders the outcome of a request for a metrics label: "200"
// for nil, a *MismatchError or a *ResponseError, the status code of an
// *APIError, and "error" otherwise (no response; callers skip ErrNotSent, which is no request).
func StatusLabel(err error) string {
	var ae *APIError
	var mm *MismatchError
	var re *ResponseError
	switch {
	case err == nil, errors.As(err, &mm), errors.As(err, &re):
		return "200"
	case errors.As(err, &ae):
		return strconv.Itoa(ae.StatusCode)
	default:
		return "error"
	}
}
