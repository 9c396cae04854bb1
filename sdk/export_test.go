package sdk

import "time"

// SetTopicIdleTimeout sets how long idle topic senders live, for tests,
// and returns a function restoring the old value.
func SetTopicIdleTimeout(d time.Duration) func() {
	old := topicIdleTimeout
	topicIdleTimeout = d
	return func() { topicIdleTimeout = old }
}

// Topics returns how many topics have a sender goroutine.
func (p *Producer) Topics() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.topics)
}
