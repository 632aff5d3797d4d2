package config

// Probes configures verification and warming requests after a purge.
type Probes struct{}
