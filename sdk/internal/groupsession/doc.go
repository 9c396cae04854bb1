// Package groupsession is the client side of Varve's consumer-group
// protocol, behind sdk.GroupConsumer: it holds the member's JoinGroup
// stream and heartbeats, joins again when the stream breaks, applies each
// new generation (revoke, commit, seek, assign) and commits offsets fenced
// by member id and generation, retrying a commit across a rebalance.
//
// It reads records through a Reader per topic (sdk.Consumer) and knows no
// SDK type: package sdk adapts its public GroupConsumer onto Member. It
// never decides assignments; the cluster does.
package groupsession
