package api

// The gate's wire types (docs/gate.md), under /v1/gate/.

// EnrollmentIn is the body of POST /v1/gate/enrollments.
type EnrollmentIn struct {
	Username string `json:"username"`
}

// EnrollmentJSON is the answer of POST /v1/gate/enrollments: a link valid
// once, until Expires.
type EnrollmentJSON struct {
	Username string `json:"username"`
	URL      string `json:"url"`
	Expires  string `json:"expires"`
}

// GateCredentialJSON is a gate credential as the API shows it: never its
// secret or public key.
type GateCredentialJSON struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	Kind     string `json:"kind"` // passkey or totp
	Created  string `json:"created"`
	Used     string `json:"last_used,omitempty"`
}

// GateCredentialsJSON is the answer of GET /v1/gate/credentials.
type GateCredentialsJSON struct {
	Credentials []GateCredentialJSON `json:"credentials"`
}

// GateRevokedJSON is the answer of DELETE /v1/gate/credentials/{id}.
type GateRevokedJSON struct {
	Revoked GateCredentialJSON `json:"revoked"`
}

// GateSignedOutJSON is the answer of DELETE /v1/gate/sessions/{username}.
type GateSignedOutJSON struct {
	SignedOut string `json:"signed_out"`
}
