package encoder

// Twinned says whether e runs on two sessions (see Config.OneSession).
func (e *Encoder) Twinned() bool { return e.twin != nil }
