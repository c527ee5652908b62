// Package docs holds dirpv's documentation pages, which the README links. It has no code: its
// test checks that every relative link and image in README.md and docs/*.md resolves, to a file
// and, with a #anchor, to one of that file's headings, so that `go test ./...` catches a page
// renamed or a heading reworded under a link.
package docs
