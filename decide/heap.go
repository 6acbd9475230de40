package decide

// endHeap is a binary min-heap of slot indexes ordered by when something
// ends (a ban, a lock). Each slot records its position in the heap (setPos,
// -1 once removed), so any entry can be removed or moved in O(log n): the
// ban table evicts the ban that ends first, the account table releases
// locks as they end. end and setPos reach into the owner's slots; the owner
// serializes access.
type endHeap struct {
	items  []int32
	end    func(slot int32) int64
	setPos func(slot, pos int32)
}

func (h *endHeap) len() int { return len(h.items) }

// min is the slot that ends first, or -1 when the heap is empty.
func (h *endHeap) min() int32 {
	if len(h.items) == 0 {
		return -1
	}
	return h.items[0]
}

func (h *endHeap) push(slot int32) {
	h.items = append(h.items, slot)
	h.setPos(slot, int32(len(h.items)-1))
	h.up(len(h.items) - 1)
}

// remove takes out the slot at position pos.
func (h *endHeap) remove(pos int32) {
	j, last := int(pos), len(h.items)-1
	slot := h.items[j]
	if j != last {
		h.swap(j, last)
	}
	h.items = h.items[:last]
	h.setPos(slot, -1)
	if j != last {
		h.fix(int32(j))
	}
}

// fix restores the order after the end of the slot at pos changed.
func (h *endHeap) fix(pos int32) {
	if !h.down(int(pos)) {
		h.up(int(pos))
	}
}

func (h *endHeap) less(a, b int) bool { return h.end(h.items[a]) < h.end(h.items[b]) }

func (h *endHeap) swap(a, b int) {
	h.items[a], h.items[b] = h.items[b], h.items[a]
	h.setPos(h.items[a], int32(a))
	h.setPos(h.items[b], int32(b))
}

func (h *endHeap) up(j int) {
	for j > 0 {
		p := (j - 1) / 2
		if !h.less(j, p) {
			return
		}
		h.swap(j, p)
		j = p
	}
}

func (h *endHeap) down(j int) bool {
	start, n := j, len(h.items)
	for {
		c := 2*j + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && h.less(r, c) {
			c = r
		}
		if !h.less(c, j) {
			break
		}
		h.swap(j, c)
		j = c
	}
	return j > start
}
