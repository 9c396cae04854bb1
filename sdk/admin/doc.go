// Package admin is the administrative client of Varve: topics (create,
// list, describe, update, delete), consumer groups (list, describe,
// committed offsets, reset, delete) and compaction (pause, resume, status).
//
// It stands beside package sdk as franz-go's kadm stands beside kgo: sdk
// keeps the data path (Producer, Consumer, GroupConsumer, Fetch, Tail,
// Scan), admin the calls that manage a cluster. Its API speaks in its own
// types ([TopicConfig], [Topic], [GroupDescription], ...), converted from
// and to the generated protobuf types at the boundary, so callers need not
// import gen/.
//
// An admin [Client] shares an [sdk.Client]'s transport, protocol, tracing
// and interceptors: make one with [New] (same address and sdk.Options as
// sdk.New) or from an existing client with [NewFromClient].
//
// Errors wrap the *connect.Error of the failing call with what was
// attempted, so callers branch with connect.CodeOf(err) (for example
// connect.CodeNotFound for an unknown topic) and sdk.GroupReason(err).
//
// Like sdk, admin imports no server package (internal/lint/boundaries).
package admin
