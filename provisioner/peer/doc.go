// Package peer reads the volumes and StorageClasses of the provisioners dirpv takes over
// (--adopt) by those provisioners' own conventions, and derives dirpv's record from them. It
// only derives: what it derives is then checked like any record dirpv made itself
// (backend.Set.FromPV), and the directory on disk by volumefs.Adopt.
package peer
