package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"dirpv.io/dirpv/provisioner/volumeop"
)

// runHelper performs a batch of volume operations under --root (`dirpv helper [--root=DIR]
// OP FLAGS... [-- OP FLAGS...]...`) and reports each one's outcome through the container's
// termination message, where the provisioner reads them. It fails only when it could not run the
// batch at all; an operation that failed is reported among the outcomes.
func runHelper(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("helper", flag.ContinueOnError)
	root := fs.String("root", "/data", "directory the operations' paths are relative to")
	termLog := fs.String("termination-log", "/dev/termination-log", "file that receives the outcomes")
	serve := fs.Bool("serve", false, "run no operation: wait until stopped (a helper agent, whose batches come by --stream)")
	stream := fs.Bool("stream", false, "run the batches requested on stdin, a line each, and write their outcomes to stdout until stdin ends (an exec into a helper agent)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) { // usage asked for and printed
			return nil
		}
		return err
	}
	if (*serve || *stream) && fs.NArg() > 0 {
		return fmt.Errorf("helper: --serve and --stream take no operations")
	}
	switch {
	case *serve:
		<-ctx.Done()
		return nil
	case *stream:
		return volumeop.Serve(ctx, stdin, stdout, func(ctx context.Context, ops []volumeop.Op) []volumeop.Outcome {
			return volumeop.RunBatch(ctx, *root, ops)
		})
	}
	ops, err := volumeop.ParseBatchArgs(fs.Args())
	if err != nil {
		return fmt.Errorf("helper: %w", err)
	}
	msg := volumeop.EncodeOutcomes(volumeop.RunBatch(ctx, *root, ops))
	// Best effort: outside a pod there is no termination log, and stdout carries the same.
	_ = os.WriteFile(*termLog, []byte(msg), 0o644)
	_, err = fmt.Fprintln(stdout, msg)
	return err
}
