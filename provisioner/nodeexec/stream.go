package nodeexec

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"

	"dirpv.io/dirpv/provisioner/volumeop"
)

// stream is an agent's exec of `dirpv helper --stream`: requests are written to in, and a
// reader hands each reply to the batch that waits for it.
type stream struct {
	writing sync.Mutex // one request line at a time
	in      io.Writer

	mu      sync.Mutex
	lastID  uint64
	waiting map[uint64]chan volumeop.Reply

	ended chan struct{} // closed when the exec has ended, err set
	err   error
}

// open starts the stream of the agent called name, which lasts as long as life, and waits until
// it is ready or ctx ends.
func (a *Agents) open(life, ctx context.Context, name string) (*stream, error) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &stream{in: inW, waiting: map[uint64]chan volumeop.Reply{}, ended: make(chan struct{})}
	go func() {
		err := a.Exec(life, name, streamCommand, inR, outW)
		_ = outW.CloseWithError(err) // nil: io.EOF to the reader
		_ = inR.CloseWithError(fmt.Errorf("the stream ended: %w", cmp.Or(err, io.EOF)))
	}()
	ready := make(chan struct{})
	go func() {
		s.err = fmt.Errorf("the stream ended: %w", cmp.Or(s.read(outR, ready), io.EOF))
		close(s.ended)
		_ = outR.CloseWithError(s.err) // the exec stops, if it had not
	}()
	select {
	case <-ready:
		return s, nil
	case <-s.ended:
		return nil, s.err
	case <-ctx.Done():
		return nil, context.Cause(ctx) // life, cancelled by whoever gives up the agent, ends the exec
	}
}

// read hands each reply on out to the batch that waits for it, and closes ready at the first,
// until out ends.
func (s *stream) read(out io.Reader, ready chan<- struct{}) error {
	lines := bufio.NewScanner(out)
	lines.Buffer(make([]byte, 64<<10), volumeop.MaxStreamLine)
	for lines.Scan() {
		var r volumeop.Reply
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			return fmt.Errorf("unreadable reply %.100q", lines.Text())
		}
		if r.ID == 0 {
			if ready != nil {
				close(ready)
				ready = nil
			}
			continue
		}
		s.mu.Lock()
		select {
		case s.waiting[r.ID] <- r: // a nil channel (no one waits) is never ready
		default:
		}
		s.mu.Unlock()
	}
	return lines.Err()
}

// call runs the batch of args and returns its reply; an error means the stream ended (or ctx),
// and the batch may or may not have run.
func (s *stream) call(ctx context.Context, args []string) (volumeop.Reply, error) {
	c := make(chan volumeop.Reply, 1)
	s.mu.Lock()
	s.lastID++
	id := s.lastID
	s.waiting[id] = c
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiting, id)
		s.mu.Unlock()
	}()
	if err := s.send(volumeop.Request{ID: id, Args: args}); err != nil {
		return volumeop.Reply{}, err
	}
	select {
	case r := <-c:
		return r, nil
	case <-s.ended:
		select {
		case r := <-c: // its reply came last
			return r, nil
		default:
			return volumeop.Reply{}, s.err
		}
	case <-ctx.Done():
		// The agent starts none of the batch's operations that have not started: they would
		// only run beside their retries. Sent aside, as a stream that hangs would hold it up.
		go func() { _ = s.send(volumeop.Request{ID: id, Cancel: true}) }()
		return volumeop.Reply{}, context.Cause(ctx)
	}
}

// send writes r as a line of the stream.
func (s *stream) send(r volumeop.Request) error {
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	s.writing.Lock()
	defer s.writing.Unlock()
	_, err = s.in.Write(append(line, '\n'))
	return err
}

// PodExec returns an Exec for the helper container of pods in namespace, through the API
// server as `kubectl exec` does (WebSocket, or SPDY from servers without it).
func PodExec(cfg *rest.Config, client kubernetes.Interface, namespace string) func(ctx context.Context, name string, cmd []string, stdin io.Reader, stdout io.Writer) error {
	return func(ctx context.Context, name string, cmd []string, stdin io.Reader, stdout io.Writer) error {
		req := client.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(name).SubResource("exec").
			VersionedParams(&v1.PodExecOptions{Container: helperContainer, Command: cmd, Stdin: stdin != nil, Stdout: true, Stderr: true}, scheme.ParameterCodec)
		ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
		if err != nil {
			return err
		}
		spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
		if err != nil {
			return err
		}
		exec, err := remotecommand.NewFallbackExecutor(ws, spdy, httpstream.IsUpgradeFailure)
		if err != nil {
			return err
		}
		var stderr bytes.Buffer
		if err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: &stderr}); err != nil {
			if msg := bytes.TrimSpace(stderr.Bytes()); len(msg) > 0 {
				return fmt.Errorf("%w: %s", err, msg)
			}
			return err
		}
		return nil
	}
}
