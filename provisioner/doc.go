// Package provisioner turns claims into directory-backed PersistentVolumes and reclaims them. It
// implements the external provisioner library's Provisioner interface: Provision parses the class,
// places and creates the directory through a backend, and builds the PV with everything Delete
// needs recorded on it; Delete re-checks that record and applies the class's onDelete action.
package provisioner
