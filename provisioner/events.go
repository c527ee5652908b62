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
	// ReasonVolumeAdopted: a PV of a provisioner dirpv adopts (--adopt) was taken over: its
	// directory bears dirpv's marker and the PV dirpv's record.
	ReasonVolumeAdopted = "VolumeAdopted"
	// ReasonAdoptionRefused: such a PV failed a check and was left as it was.
	ReasonAdoptionRefused = "AdoptionRefused"
)
