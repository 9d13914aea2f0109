package flowclient

// Code snapshots for tasks: the client side of CodeService (README.md, "Code upload").
//
// A snapshot is a manifest blob, canonical JSON {"files":[{"digest","executable","path","size"}...],
// "version":1} sorted by path, whose sha256 names it in TaskSpec.code_digest. Files are
// content-addressed blobs: only those flowd lacks are sent, packed into ~1 MB messages.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	flowapiv1 "flow.local/gen/go/flowapi/v1"
)

// ChunkBytes is about how many bytes go in one UploadBlobs message (and in one read of a file).
const ChunkBytes = 1024 * 1024

const (
	virtualenvMarker = "pyvenv.cfg"
	hashWorkers      = 4
	digestsPerQuery  = 10_000 // keeps FindMissingBlobs requests well under 4 MB
)

var skippedDirs = map[string]bool{".git": true, "node_modules": true, "__pycache__": true}

// ManifestEntry is one file of a snapshot.
type ManifestEntry struct {
	Path       string // POSIX, relative to the code root
	Digest     string // "sha256:<hex>"
	Size       int64
	Executable bool
}

type plannedFile struct {
	ManifestEntry
	source string // what to read (a symlink's target file)
}

// listFiles returns what a task submitted from root gets, sorted by path: every file except
// `.git`, `node_modules`, `__pycache__` and virtualenvs (directories holding a `pyvenv.cfg`).
// Unlike the Python SDK it reads no `.gitignore` or `.flowignore`: this is a thin client; keep
// big data out of the root. A symlink to a file uploads that file; other symlinks are skipped.
// No hash cache is kept: each UploadCode reads every file.
func listFiles(root string) ([]plannedFile, error) {
	var files []plannedFile
	err := filepath.WalkDir(root, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == root {
			return nil
		}
		if entry.Name() == ".git" {
			if entry.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if entry.IsDir() {
			if skippedDirs[entry.Name()] {
				return filepath.SkipDir
			}
			if marker, err := os.Stat(filepath.Join(path, virtualenvMarker)); err == nil && !marker.IsDir() {
				return filepath.SkipDir // a virtualenv
			}
			return nil
		}
		if !entry.Type().IsRegular() && entry.Type()&fs.ModeSymlink == 0 {
			return nil // sockets, FIFOs, devices
		}
		info, err := os.Stat(path) // follows a symlink
		if err != nil || !info.Mode().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if !utf8.ValidString(rel) {
			return fmt.Errorf("%q: the file name is not UTF-8, which a manifest cannot hold; rename it", path)
		}
		files = append(files, plannedFile{
			ManifestEntry: ManifestEntry{Path: rel, Size: info.Size(), Executable: info.Mode()&0o111 != 0},
			source:        path,
		})
		return nil
	})
	// Go compares strings byte by byte: UTF-8 byte order is code point order, as Python sorts.
	slices.SortFunc(files, func(a, b plannedFile) int { return strings.Compare(a.Path, b.Path) })
	return files, err
}

func hashFile(path string) (string, error) {
	file, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer file.Close()
	hash := sha256.New()
	if _, err := io.Copy(hash, file); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(hash.Sum(nil)), nil
}

// hashFiles fills in each file's digest, a few files at a time.
func hashFiles(files []plannedFile) error {
	errs := make([]error, len(files))
	next := make(chan int)
	var workers sync.WaitGroup
	for range hashWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for i := range next {
				files[i].Digest, errs[i] = hashFile(files[i].source)
			}
		}()
	}
	for i := range files {
		next <- i
	}
	close(next)
	workers.Wait()
	return errors.Join(errs...)
}

// pythonJSONString quotes text as Python's json.dumps does (ensure_ascii: everything outside
// ' '..'~' escaped, characters beyond U+FFFF as surrogate pairs).
func pythonJSONString(text string) string {
	var out strings.Builder
	out.WriteByte('"')
	for _, r := range text {
		switch {
		case r == '"' || r == '\\':
			out.WriteByte('\\')
			out.WriteRune(r)
		case r == '\n':
			out.WriteString(`\n`)
		case r == '\r':
			out.WriteString(`\r`)
		case r == '\t':
			out.WriteString(`\t`)
		case r == '\b':
			out.WriteString(`\b`)
		case r == '\f':
			out.WriteString(`\f`)
		case r >= ' ' && r <= '~':
			out.WriteRune(r)
		case r > 0xffff:
			r -= 0x10000
			fmt.Fprintf(&out, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
		default:
			fmt.Fprintf(&out, `\u%04x`, r)
		}
	}
	out.WriteByte('"')
	return out.String()
}

// ManifestBytes is the canonical manifest of these files: sorted by path, compact JSON with
// sorted keys, byte for byte what the Python SDK writes.
func ManifestBytes(entries []ManifestEntry) []byte {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b ManifestEntry) int { return strings.Compare(a.Path, b.Path) })
	var out strings.Builder
	out.WriteString(`{"files":[`)
	for i, e := range sorted {
		if i > 0 {
			out.WriteByte(',')
		}
		fmt.Fprintf(&out, `{"digest":%s,"executable":%s,"path":%s,"size":%d}`,
			pythonJSONString(e.Digest), strconv.FormatBool(e.Executable), pythonJSONString(e.Path), e.Size)
	}
	out.WriteString(`],"version":1}`)
	return []byte(out.String())
}

// DigestOf is "sha256:<hex>" of data.
func DigestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// blob is one blob to send: a file (source) or bytes in memory (data).
type blob struct {
	digest string
	size   int64
	source string
	data   []byte
}

// packer sends BlobChunks to UploadBlobs, about ChunkBytes per message.
type packer struct {
	stream  flowapiv1.CodeService_UploadBlobsClient
	pending []*flowapiv1.BlobChunk
	bytes   int
}

func (p *packer) room() int64 {
	return int64(ChunkBytes - p.bytes)
}

func (p *packer) add(chunk *flowapiv1.BlobChunk) error {
	p.pending = append(p.pending, chunk)
	p.bytes += len(chunk.Data) + 100 // ~ the framing of one BlobChunk
	if p.bytes >= ChunkBytes {
		return p.flush()
	}
	return nil
}

func (p *packer) flush() error {
	if len(p.pending) == 0 {
		return nil
	}
	err := p.stream.Send(&flowapiv1.UploadBlobsRequest{Chunks: p.pending})
	p.pending, p.bytes = nil, 0
	return err
}

// send adds one blob: whole when it fits the current message, otherwise in pieces at increasing
// offsets (the first at offset 0). A file is read piece by piece, never whole.
func (p *packer) send(b blob) error {
	var file *os.File
	if b.data == nil {
		var err error
		if file, err = os.Open(b.source); err != nil {
			return err
		}
		defer file.Close()
	}
	for offset := int64(0); ; {
		size := min(b.size-offset, max(1, p.room()))
		var data []byte
		if file == nil {
			data = b.data[offset : offset+size]
		} else {
			data = make([]byte, size)
			if _, err := io.ReadFull(file, data); err != nil {
				return fmt.Errorf("%s: %w (did it shrink while uploading? upload again)", b.source, err)
			}
		}
		if err := p.add(&flowapiv1.BlobChunk{Digest: b.digest, Size: b.size, Offset: offset, Data: data}); err != nil {
			return err
		}
		offset += size
		if offset >= b.size {
			return nil
		}
	}
}

// sendBlobs streams the blobs to UploadBlobs in one call.
func (c *Client) sendBlobs(ctx context.Context, blobs []blob) error {
	ctx, cancel := context.WithCancel(ctx) // ends the stream if we stop sending early
	defer cancel()
	stream, err := c.Code.UploadBlobs(ctx)
	if err != nil {
		return err
	}
	p := &packer{stream: stream}
	for _, b := range blobs {
		if err = p.send(b); err != nil {
			break
		}
	}
	if err == nil {
		err = p.flush()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	// io.EOF from Send means flowd ended the call early: CloseAndRecv says why.
	_, err = stream.CloseAndRecv()
	return err
}

// UploadCode uploads a snapshot of the directory root (only the blobs flowd lacks) and returns its
// digest, "sha256:<hex>", for TaskSpec.CodeDigest. What goes is every file but `.git`,
// `node_modules`, `__pycache__` and virtualenvs; `.gitignore`/`.flowignore` are not read (for a
// tree without them, the snapshot is the one the Python SDK makes). A file that changes while it
// is sent makes flowd refuse it (an *Error, VALIDATION_FAILED): call again.
func (c *Client) UploadCode(ctx context.Context, root string) (string, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	files, err := listFiles(root)
	if err != nil {
		return "", err
	}
	if err := hashFiles(files); err != nil {
		return "", err
	}
	entries := make([]ManifestEntry, len(files))
	for i, f := range files {
		entries[i] = f.ManifestEntry
	}
	manifest := ManifestBytes(entries)
	manifestDigest := DigestOf(manifest)

	wanted := []string{manifestDigest}
	for _, f := range files {
		wanted = append(wanted, f.Digest)
	}
	slices.Sort(wanted)
	wanted = slices.Compact(wanted)
	missing := map[string]bool{}
	for start := 0; start < len(wanted); start += digestsPerQuery {
		reply, err := c.Code.FindMissingBlobs(ctx, &flowapiv1.FindMissingBlobsRequest{
			Digests: wanted[start:min(start+digestsPerQuery, len(wanted))],
		})
		if err != nil {
			return "", err
		}
		for _, d := range reply.GetMissingDigests() {
			missing[d] = true
		}
	}
	var blobs []blob
	for _, f := range files {
		if missing[f.Digest] {
			blobs = append(blobs, blob{digest: f.Digest, size: f.Size, source: f.source})
			delete(missing, f.Digest) // the same content under two names goes once
		}
	}
	if missing[manifestDigest] {
		blobs = append(blobs, blob{digest: manifestDigest, size: int64(len(manifest)), data: manifest})
	}
	if len(blobs) > 0 {
		if err := c.sendBlobs(ctx, blobs); err != nil {
			return "", err
		}
	}
	return manifestDigest, nil
}
