package rotator

import "github.com/affix-rotator/affix-rotator/affix"

// keyRefusedNote is the prefix of every message about an Affix 401: the
// request was refused because of the API key, not the new secret.
const keyRefusedNote = "affix refused the API key (401): check the client's API key (affix.api_key_env or api_key_file): "

// keyNote returns keyRefusedNote when err is an Affix 401, else "".
func keyNote(err error) string {
	if affix.StatusLabel(err) == "401" {
		return keyRefusedNote
	}
	return ""
}
