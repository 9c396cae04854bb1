// Package tier owns object storage: the Store interface, its filesystem and
// S3 backends, and decorators (call recording) that wrap any Store.
//
// Objects written through tier are immutable. tier never interprets object
// contents (that is tier/segment) and never talks to etcd.
package tier
