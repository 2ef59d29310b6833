package affix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxRetryAfter caps a server's Retry-After; a larger value is capped and
// the cap noted in RetryAfterNote.
const MaxRetryAfter = time.Hour

// APIError is a non-200 answer, decoded from the documented error bodies:
// 400 {message, validation_error}, 401 {error, message, code},
// 409 {code, token, error}, 429 {message} + Retry-After, 500 {message}.
// The 409's token is an access token: it is never kept.
type APIError struct {
	StatusCode      int
	Message         string // message (400, 401, 429, 500)
	ValidationError string // 400
	ErrorType       string // 401 and 409 "error"
	Code            string // 401 and 409 "code"
	RetryAfter      time.Duration
	HasRetryAfter   bool
	// RetryAfterNote explains a Retry-After header that was unusable or capped.
	RetryAfterNote string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "affix: POST %s: %d %s", Path, e.StatusCode, http.StatusText(e.StatusCode))
	for _, kv := range [][2]string{{"error", e.ErrorType}, {"code", e.Code}, {"message", e.Message}, {"validation_error", e.ValidationError}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, "; %s: %s", kv[0], kv[1])
		}
	}
	if e.HasRetryAfter {
		fmt.Fprintf(&b, "; retry after %s", e.RetryAfter)
	}
	return b.String()
}

// TransportError: no answer (connection refused or dropped, timeout). The
// request may or may not have been applied.
type TransportError struct {
	msg   string // redacted description
	cause error
}

func (e *TransportError) Error() string { return "affix: POST " + Path + ": no response: " + e.msg }

// Unwrap returns the cause (for errors.Is(err, context.Canceled) and the
// like). Its text holds no secret: net/http errors name only the URL, whose
// credentials New refuses.
func (e *TransportError) Unwrap() error { return e.cause }

// ResponseError: a 200 whose body is not the documented object. The request
// was probably applied, but what Affix holds is unknown.
type ResponseError struct{ Problem string }

func (e *ResponseError) Error() string {
	return "affix: POST " + Path + ": 200 with a malformed body: " + e.Problem
}

// MismatchError: a 200 whose client_secret is not exactly the set sent.
type MismatchError struct {
	Sent, Got  int // sizes of the sets
	Unexpected int // secrets in the answer that were not sent
	contains   []bool
}

// Contains reports whether the i-th secret sent is in Affix's answer.
func (e *MismatchError) Contains(i int) bool { return i >= 0 && i < len(e.contains) && e.contains[i] }

func (e *MismatchError) Error() string {
	var in []string
	for i, c := range e.contains {
		if c {
			in = append(in, strconv.Itoa(i))
		}
	}
	return fmt.Sprintf("affix: POST %s: 200 but client_secret is not the set sent: sent %d, answer has %d (of the sent ones: [%s]; %d not sent)",
		Path, e.Sent, e.Got, strings.Join(in, ","), e.Unexpected)
}

func newAPIError(resp *http.Response, body []byte, red func(string) string) *APIError {
	e := &APIError{StatusCode: resp.StatusCode}
	var w struct {
		Message         any `json:"message"`
		ValidationError any `json:"validation_error"`
		Error           any `json:"error"`
		Code            any `json:"code"`
		// "token" (409) is deliberately not decoded.
	}
	if json.Unmarshal(body, &w) == nil {
		e.Message, e.ValidationError = red(text(w.Message)), red(text(w.ValidationError))
		e.ErrorType, e.Code = red(text(w.Error)), red(text(w.Code))
	} else if len(body) > 0 && resp.StatusCode != http.StatusConflict {
		e.Message = red(string(body))
	}
	if h := resp.Header.Get("Retry-After"); h != "" {
		e.RetryAfter, e.HasRetryAfter, e.RetryAfterNote = parseRetryAfter(h, time.Now())
	}
	return e
}

func text(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	default:
		b, _ := json.Marshal(t)
		return string(b)
	}
}

// parseRetryAfter reads delay-seconds (the spec's integer) or an HTTP-date
// (RFC 9110 §10.2.3).
func parseRetryAfter(h string, now time.Time) (time.Duration, bool, string) {
	h = strings.TrimSpace(h)
	var d time.Duration
	if n, err := strconv.ParseInt(h, 10, 64); err == nil {
		if n < 0 {
			return 0, false, "negative Retry-After ignored"
		}
		if n > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true, fmt.Sprintf("Retry-After of %d s capped at %s", n, MaxRetryAfter)
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
		if d < 0 {
			d = 0
		}
		if d > MaxRetryAfter {
			return MaxRetryAfter, true, fmt.Sprintf("Retry-After date %s capped at %s", t.UTC().Format(time.RFC3339), MaxRetryAfter)
		}
	} else {
		return 0, false, "unparsable Retry-After ignored"
	}
	return d, true, ""
}

// Definite reports whether err proves the request was not applied: a 400,
// 401, 403, 404 or 422.
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

// Transient reports whether err is worth retrying: 408, 409, 425, 429, 5xx,
// no response, a malformed 200, or the request's own timeout.
func Transient(err error) bool {
	var ae *APIError
	var te *TransportError
	var re *ResponseError
	switch {
	case errors.As(err, &ae):
		return ae.StatusCode == 408 || ae.StatusCode == 409 || ae.StatusCode == 425 || ae.StatusCode == 429 || ae.StatusCode >= 500
	case errors.As(err, &te), errors.As(err, &re):
		return !errors.Is(err, context.Canceled)
	}
	return false
}

// RetryAfter returns the server's Retry-After, if it gave a usable one.
func RetryAfter(err error) (time.Duration, bool) {
	var ae *APIError
	if errors.As(err, &ae) && ae.HasRetryAfter {
		return ae.RetryAfter, true
	}
	return 0, false
}

// StatusLabel renders the outcome of a request for a metrics label: the
// HTTP status, or "error" when there was no response.
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
