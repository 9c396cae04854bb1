package kafka

// authState is a connection's SASL state. Placeholder until SASL lands.
type authState struct{}

func (c *conn) startAuth() {}

// required reports whether the connection must authenticate before any
// request but ApiVersions, SaslHandshake and SaslAuthenticate.
func (a *authState) required() bool { return false }
