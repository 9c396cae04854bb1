package node

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"

	"github.com/varve-io/varve/internal/guard"
	"github.com/varve-io/varve/kafka"
	"github.com/varve-io/varve/metadata/groups"
)

// startKafka serves the Kafka protocol on cfg.KafkaListen (package
// kafka), registers this node's advertised Kafka address under the kafka
// role and keeps the listener's broker list to the registered nodes.
func (n *Node) startKafka(cfg Config) error {
	if cfg.KafkaListen == "" || cfg.KafkaListen == "off" {
		return nil
	}
	if n.in == nil && n.fetcher == nil {
		return fmt.Errorf("kafka_listen %s needs the ingest or the fetch role on this node (it has %s)",
			cfg.KafkaListen, strings.Join(cfg.Roles, ","))
	}
	topics := n.topics // the ingest role's topics, else the fetch role's index
	if topics == nil {
		topics = n.index
	}
	ln, err := net.Listen("tcp", cfg.KafkaListen)
	if err != nil {
		return fmt.Errorf("listen for Kafka on %s: %w", cfg.KafkaListen, err)
	}
	if n.sec.tls != nil {
		// The API's certificate, reloaded the same way; no ALPN (Kafka
		// has none). With auth mtls a client certificate is required.
		ln = tls.NewListener(ln, n.sec.tls.Config())
	}
	adv := cfg.KafkaAdvertisedAddr
	if adv == "" || adv == "off" {
		adv = advertise(ln.Addr().String())
	}
	byTime, err := n.kafkaOffsetsByTime(n.baseCtx)
	if err != nil {
		ln.Close()
		return err
	}
	s, err := kafka.New(kafka.Config{
		NodeID: cfg.NodeID, Advertised: adv, ClusterID: "varve", MaxRequestBytes: cfg.MaxRequestBytes,
		FetchMaxBytes: cfg.FetchMaxBytes, Logger: n.log,
	}, kafka.Deps{Meta: n.meta, Topics: topics, In: n.in, Fetcher: n.fetcher, Groups: groups.New(n.meta), Security: n.kafkaSecurity(),
		ProducerStateTTL: cfg.ProducerStateTTL, OffsetsByTime: byTime,
		RecordLimit: func(topic string, maxRecord int32) error {
			return checkRecordFitsRequest(topic, maxRecord, cfg.MaxRequestBytes)
		}})
	if err != nil {
		ln.Close()
		return err
	}
	n.kafka, n.kafkaLn = s, ln
	go func() {
		if err := s.Serve(n.kafkaLn); err != nil {
			n.log.Error("kafka listener stopped", "err", err)
		}
	}()
	if err := n.meta.Register(n.baseCtx, kafka.Role, cfg.NodeID, kafka.Registration(adv, n.in != nil, n.fetcher != nil)); err != nil {
		return err
	}
	n.registered = append(n.registered, kafka.Role)
	stop, err := n.meta.WatchNodes(n.baseCtx, kafka.Role, s.SetBrokers)
	if err != nil {
		return err
	}
	n.onClose = append(n.onClose, stop)
	return nil
}

// advertise is a listen address as others reach it: an unspecified host
// (0.0.0.0, ::) becomes this host's first non-loopback address.
func advertise(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return addr
	}
	if ip := hostAddress(); ip != nil {
		return net.JoinHostPort(ip.String(), port)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// KafkaAddr is the Kafka listener's address, host:port ("" without one).
func (n *Node) KafkaAddr() string {
	if n.kafkaLn == nil {
		return ""
	}
	return n.kafkaLn.Addr().String()
}

// kafkaSecurity is the guard the Kafka listener authorizes with (nil with
// auth none: every connection may do everything).
func (n *Node) kafkaSecurity() kafka.Security {
	if n.sec.guard.Auth() == "none" {
		return nil
	}
	return n.sec.guard
}

// kafkaExposure warns of a Kafka listener on a non-loopback address
// without TLS on a node with authentication: SASL/PLAIN sends API keys in
// clear text there (SCRAM does not, but every record still crosses the
// network unencrypted). CheckExposure returns it.
func (c Config) kafkaExposure() string {
	s := c.Security
	if c.KafkaListen == "" || c.KafkaListen == "off" || s.hasTLS() || s.Auth == "" || s.Auth == guard.AuthNone {
		return ""
	}
	if host, _, err := net.SplitHostPort(c.KafkaListen); err == nil {
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return ""
		}
	}
	return fmt.Sprintf("the Kafka listener on %s has no TLS with auth %s: SASL/PLAIN sends API keys in clear text and records cross the network unencrypted; set tls_cert_file and tls_key_file (docs/security.md)", c.KafkaListen, s.Auth)
}
