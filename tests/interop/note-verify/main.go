// note-verify checks an IKD audit log checkpoint with the Go ecosystem's own packages, not ours:
// golang.org/x/mod/sumdb/note opens the signed note with the log's verifier key,
// github.com/transparency-dev/formats parses the checkpoint and verifies witness cosignatures
// (c2sp.org/tlog-cosignature), and github.com/transparency-dev/merkle verifies a consistency
// proof from an older checkpoint when one is given.
//
// Usage: note-verify -log-vkey VKEY [-witness-vkey VKEY]... [-old FILE -proof FILE] < checkpoint
//
// It prints "checkpoint ORIGIN SIZE ROOT" and one "cosigned NAME UNIX-TIME" line per verified
// cosignature, "consistent OLD-SIZE SIZE" when a proof verified, and exits 1 on any failure.
package main

import (
	"bufio"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAILED: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	logVkey := flag.String("log-vkey", "", "the log's verifier key")
	var witnessVkeys list
	flag.Var(&witnessVkeys, "witness-vkey", "a witness's cosignature verifier key (repeatable)")
	oldFile := flag.String("old", "", "an older checkpoint of the same log")
	proofFile := flag.String("proof", "", "base64 consistency proof hashes, one per line")
	flag.Parse()

	msg, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading the checkpoint: %v", err)
	}
	logVerifier, err := note.NewVerifier(*logVkey)
	if err != nil {
		fail("the log's verifier key: %v", err)
	}
	// The standard signed-note package first: the log's signature, unknown signatures ignored.
	n, err := note.Open(msg, note.VerifierList(logVerifier))
	if err != nil {
		fail("sumdb/note: %v", err)
	}
	if len(n.Sigs) != 1 || n.Sigs[0].Name != logVerifier.Name() {
		fail("sumdb/note: expected the log's signature only, got %d", len(n.Sigs))
	}

	witnesses := []note.Verifier{}
	for _, v := range witnessVkeys {
		w, err := fnote.NewVerifierForCosignatureV1(v)
		if err != nil {
			fail("witness verifier key %q: %v", v, err)
		}
		witnesses = append(witnesses, w)
	}
	cp, _, cosigned, err := log.ParseCheckpoint(msg, logVerifier.Name(), logVerifier, witnesses...)
	if err != nil {
		fail("formats/log: %v", err)
	}
	fmt.Printf("checkpoint %s %d %s\n", cp.Origin, cp.Size, base64.StdEncoding.EncodeToString(cp.Hash))
	for _, sig := range cosigned.Sigs {
		if sig.Name == logVerifier.Name() && sig.Hash == logVerifier.KeyHash() {
			continue
		}
		ts, err := fnote.CoSigV1Timestamp(sig)
		if err != nil {
			fail("cosignature of %s: %v", sig.Name, err)
		}
		fmt.Printf("cosigned %s %d\n", sig.Name, ts.Unix())
	}

	if *oldFile == "" {
		return
	}
	oldMsg, err := os.ReadFile(*oldFile)
	if err != nil {
		fail("reading the old checkpoint: %v", err)
	}
	old, _, _, err := log.ParseCheckpoint(oldMsg, logVerifier.Name(), logVerifier)
	if err != nil {
		fail("old checkpoint: %v", err)
	}
	hashes := [][]byte{}
	if *proofFile != "" {
		f, err := os.Open(*proofFile)
		if err != nil {
			fail("reading the proof: %v", err)
		}
		defer f.Close()
		scanner := bufio.NewScanner(f)
		for scanner.Scan() {
			line := strings.TrimSpace(scanner.Text())
			if line == "" {
				continue
			}
			h, err := base64.StdEncoding.DecodeString(line)
			if err != nil {
				fail("proof line %q: %v", line, err)
			}
			hashes = append(hashes, h)
		}
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cp.Size, hashes, old.Hash, cp.Hash); err != nil {
		fail("merkle: the checkpoint of size %d does not extend the one of size %d: %v", cp.Size, old.Size, err)
	}
	fmt.Printf("consistent %d %d\n", old.Size, cp.Size)
}
