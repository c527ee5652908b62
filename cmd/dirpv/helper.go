package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"dirpv.io/dirpv/provisioner/volumeop"
)

// runHelper performs a batch of volume operations under --root (`dirpv helper [--root=DIR]
// OP FLAGS... [-- OP FLAGS...]...`) and reports each one's outcome through the container's
// termination message, where the provisioner reads them. It fails only when it could not run the
// batch at all; an operation that failed is reported among the outcomes.
func runHelper(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("helper", flag.ContinueOnError)
	root := fs.String("root", "/data", "directory the operations' paths are relative to")
	termLog := fs.String("termination-log", "/dev/termination-log", "file that receives the outcomes")
	serve := fs.Bool("serve", false, "run no operation: wait until stopped, for batches run by exec (a helper agent)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *serve {
		if fs.NArg() > 0 {
			return fmt.Errorf("helper: --serve takes no operations")
		}
		<-ctx.Done()
		return nil
	}
	var ops []volumeop.Op // none: a check that the helper runs (an agent's start)
	if fs.NArg() > 0 {
		var err error
		if ops, err = volumeop.ParseBatchArgs(fs.Args()); err != nil {
			return fmt.Errorf("helper: %w", err)
		}
	}
	msg := volumeop.EncodeOutcomes(volumeop.RunBatch(ctx, *root, ops))
	// Best effort: outside a pod there is no termination log, and stdout carries the same.
	_ = os.WriteFile(*termLog, []byte(msg), 0o644)
	fmt.Println(msg)
	return nil
}
