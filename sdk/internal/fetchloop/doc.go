// Package fetchloop is the engine of sdk.Consumer: per assigned partition
// it keeps a position and a fetch outstanding (the partitions that need one
// go out together as one long-poll FetchPartitions call), resolves the
// OffsetEarliest/OffsetLatest sentinels, retries retriable failures and
// moves a position that fell out of the log as the offset-reset policy
// says (the policy itself is package sdk's).
//
// It asks the cluster through the small Cluster interface (sdk.Client) and
// knows no SDK type: package sdk adapts its public Consumer onto Loop.
package fetchloop
