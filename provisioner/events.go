package provisioner

// Event reasons dirpv records itself. Failures of Provision and Delete reach the PVC or PV through
// the library's own ProvisioningFailed and VolumeFailedDelete events, with dirpv's error message.
const (
	// ReasonVolumeRetained: the PV was deleted and its directory kept and released to the
	// operator (onDelete: retain, or reclaimPolicy Retain).
	ReasonVolumeRetained = "VolumeRetained"
	// ReasonVolumeArchived: the PV was deleted and its directory renamed (onDelete: archive).
	ReasonVolumeArchived = "VolumeArchived"
	// ReasonNodeGone: the PV's node no longer exists (or was deleted and joined again), so its
	// directory could not be reclaimed.
	ReasonNodeGone = "VolumeNodeGone"
)
