package boxlite

// For the tests (package boxlite_test): how often the ownership paths ran.

// LateUndone counts values that arrived after their caller gave up and were undone.
func LateUndone() int64 { return lateUndone.Load() }

// OrphansFreed counts callbacks that found their entry taken by Close and only freed
// their payload.
func OrphansFreed() int64 { return orphansFreed.Load() }

// AbandonedSettled counts outcomes that arrived after their caller gave up.
func AbandonedSettled() int64 { return abandonedSettled.Load() }
