package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"dirpv.io/dirpv/provisioner/volumeop"
)

// runHelper performs one volume operation under --root and reports its outcome through the
// container's termination message, where the provisioner reads it.
func runHelper(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("helper", flag.ContinueOnError)
	root := fs.String("root", "/data", "directory the operation's path is relative to")
	termLog := fs.String("termination-log", "/dev/termination-log", "file that receives the result")
	if err := fs.Parse(args); err != nil {
		return err
	}
	op, err := volumeop.ParseArgs(fs.Args())
	if err != nil {
		return fmt.Errorf("helper: %w", err)
	}
	res, err := volumeop.RunLocal(ctx, *root, op)
	msg := volumeop.EncodeResult(res)
	if err != nil {
		msg = err.Error()
	}
	// Best effort: outside a pod there is no termination log, and stdout carries the same.
	_ = os.WriteFile(*termLog, []byte(msg), 0o644)
	fmt.Println(msg)
	return err
}
