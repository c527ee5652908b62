// Package config holds dirpv's typed configuration: the command-line options of the provisioner
// process and the parameters of a StorageClass. Both are parsed and validated here, in one place,
// so that every bad value is refused with a message that names it; the parameters only one
// backend takes are validated by that backend (Backend.ParseParams), called from ParseClass.
package config
