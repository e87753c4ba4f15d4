package node

// SetTestHookWaitApplied sets a function called when a read goes to wait
// for its index to apply; nil removes it.
func SetTestHookWaitApplied(f func()) { testHookWaitApplied = f }
