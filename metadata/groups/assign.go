package groups

import (
	"cmp"
	"slices"
)

// Assignment strategies of consumer groups.
const (
	// StrategySticky keeps every member's partitions where it can, balances
	// the counts (they differ by at most one among members with the same
	// subscriptions) and moves as few partitions as possible.
	StrategySticky = "sticky"
	// StrategyRange gives each member a contiguous range of every topic it
	// subscribes to, as Kafka's RangeAssignor: members sorted by id, the
	// first (partitions mod members) get one more.
	StrategyRange = "range"
)

// Assignment is a member's partitions: topic → sorted partitions.
type Assignment map[string][]int32

// Count returns the number of partitions.
func (a Assignment) Count() int {
	n := 0
	for _, ps := range a {
		n += len(ps)
	}
	return n
}

// Has reports whether a holds topic/p.
func (a Assignment) Has(topic string, p int32) bool {
	_, ok := slices.BinarySearch(a[topic], p)
	return ok
}

// Minus returns the partitions of a that b does not hold.
func (a Assignment) Minus(b Assignment) Assignment {
	out := Assignment{}
	for t, ps := range a {
		for _, p := range ps {
			if !b.Has(t, p) {
				out[t] = append(out[t], p)
			}
		}
	}
	return out
}

// Subscription is what the assignor knows of a member.
type Subscription struct {
	ID     string
	Topics []string
}

type topicPart struct {
	topic string
	p     int32
}

func cmpTP(a, b topicPart) int {
	if c := cmp.Compare(a.topic, b.topic); c != 0 {
		return c
	}
	return cmp.Compare(a.p, b.p)
}

// Assign computes the assignment of every member with strategy (range or
// sticky). partitions holds each topic's partition count (a topic missing
// from it has none); previous is the current assignment, used by sticky.
// Every partition of a subscribed topic goes to exactly one member that
// subscribes to it. It is a pure function.
func Assign(strategy string, members []Subscription, partitions map[string]int32, previous map[string]Assignment) map[string]Assignment {
	if strategy == StrategyRange {
		return assignRange(members, partitions)
	}
	return assignSticky(members, partitions, previous)
}

func assignRange(members []Subscription, partitions map[string]int32) map[string]Assignment {
	out := make(map[string]Assignment, len(members))
	subs := map[string][]string{} // topic → member ids
	for _, m := range members {
		out[m.ID] = Assignment{}
		for _, t := range m.Topics {
			subs[t] = append(subs[t], m.ID)
		}
	}
	for t, ids := range subs {
		slices.Sort(ids)
		ids = slices.Compact(ids)
		n := int(partitions[t])
		per, extra := n/len(ids), n%len(ids)
		p := 0
		for i, id := range ids {
			k := per
			if i < extra {
				k++
			}
			for j := 0; j < k; j++ {
				out[id][t] = append(out[id][t], int32(p))
				p++
			}
		}
	}
	return out
}

// assignSticky keeps what each member held where still valid, gives the
// rest to the least loaded members, then balances one move at a time.
func assignSticky(members []Subscription, partitions map[string]int32, previous map[string]Assignment) map[string]Assignment {
	s := newSticky(members)
	s.keep(previous, partitions)
	s.fill(partitions)
	for s.moveOne() {
	}
	return s.result()
}

// sticky is a sticky assignment under construction.
type sticky struct {
	ids        []string                   // member ids, sorted
	subscribed map[string]map[string]bool // member → topics
	owned      map[string][]topicPart     // member → partitions
	owner      map[topicPart]string       // partition → member
}

func newSticky(members []Subscription) *sticky {
	s := &sticky{subscribed: map[string]map[string]bool{}, owner: map[topicPart]string{}}
	s.ids = make([]string, 0, len(members))
	for _, m := range members {
		set := map[string]bool{}
		for _, t := range m.Topics {
			set[t] = true
		}
		s.subscribed[m.ID] = set
		s.ids = append(s.ids, m.ID)
	}
	slices.Sort(s.ids)
	s.ids = slices.Compact(s.ids)
	s.owned = make(map[string][]topicPart, len(s.ids))
	return s
}

// keep gives each member what it held in previous, where still valid.
func (s *sticky) keep(previous map[string]Assignment, partitions map[string]int32) {
	for _, id := range s.ids {
		for t, ps := range previous[id] {
			if !s.subscribed[id][t] {
				continue
			}
			for _, p := range ps {
				tp := topicPart{t, p}
				if p < 0 || p >= partitions[t] || s.owner[tp] != "" {
					continue
				}
				s.owner[tp] = id
				s.owned[id] = append(s.owned[id], tp)
			}
		}
	}
}

// fill gives each unowned partition to the least loaded member subscribing.
func (s *sticky) fill(partitions map[string]int32) {
	var all []topicPart
	topics := make([]string, 0, len(partitions))
	for t := range partitions {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	for _, t := range topics {
		for p := int32(0); p < partitions[t]; p++ {
			all = append(all, topicPart{t, p})
		}
	}
	for _, tp := range all {
		if s.owner[tp] != "" {
			continue
		}
		best := ""
		for _, id := range s.ids {
			if s.subscribed[id][tp.topic] && (best == "" || len(s.owned[id]) < len(s.owned[best])) {
				best = id
			}
		}
		if best != "" {
			s.owner[tp] = best
			s.owned[best] = append(s.owned[best], tp)
		}
	}
}

// moveOne balances by one step: it moves one partition from the most
// loaded member to a member that subscribes to its topic and holds at
// least two fewer, and reports whether it could. Each move lowers the sum
// of squared counts, so repeating it ends.
func (s *sticky) moveOne() bool {
	order := slices.Clone(s.ids)
	slices.SortStableFunc(order, func(a, b string) int { return cmp.Compare(len(s.owned[b]), len(s.owned[a])) })
	for _, from := range order {
		tps := s.owned[from]
		slices.SortFunc(tps, cmpTP)
		for i := len(tps) - 1; i >= 0; i-- {
			tp := tps[i]
			to := ""
			for _, id := range s.ids {
				if id != from && s.subscribed[id][tp.topic] && len(s.owned[id])+1 < len(tps) &&
					(to == "" || len(s.owned[id]) < len(s.owned[to])) {
					to = id
				}
			}
			if to != "" {
				s.owned[from] = slices.Delete(tps, i, i+1)
				s.owned[to] = append(s.owned[to], tp)
				return true
			}
		}
	}
	return false
}

// result is the assignment, each member's partitions sorted.
func (s *sticky) result() map[string]Assignment {
	out := make(map[string]Assignment, len(s.ids))
	for _, id := range s.ids {
		a := Assignment{}
		tps := s.owned[id]
		slices.SortFunc(tps, cmpTP)
		for _, tp := range tps {
			a[tp.topic] = append(a[tp.topic], tp.p)
		}
		out[id] = a
	}
	return out
}
