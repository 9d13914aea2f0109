package flowclient

import (
	"strings"
	"testing"
)

// The manifest must be byte for byte what the Python SDK writes (flow.domain.code_manifest:
// json.dumps(sort_keys=True, separators=(",", ":")), ensure_ascii), sorted by code point.
func TestManifestBytesMatchesPython(t *testing.T) {
	digest := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	got := string(ManifestBytes([]ManifestEntry{
		{Path: "z\U0001f600.txt", Digest: digest("b"), Size: 3},
		{Path: "z\uff5e.txt", Digest: digest("a"), Executable: true},
		{Path: "q\"b\\s\tt\x7f\u00e9.txt", Digest: digest("c"), Size: 12},
		{Path: "a/b", Digest: digest("d"), Size: 1},
		{Path: "a.b", Digest: digest("d"), Size: 1},
	}))
	// Printed by flow.domain.code_manifest.manifest_bytes for the same entries.
	want := `{"files":[` +
		`{"digest":"` + digest("d") + `","executable":false,"path":"a.b","size":1},` +
		`{"digest":"` + digest("d") + `","executable":false,"path":"a/b","size":1},` +
		`{"digest":"` + digest("c") + `","executable":false,"path":"q\"b\\s\tt\u007f\u00e9.txt","size":12},` +
		`{"digest":"` + digest("a") + `","executable":true,"path":"z\uff5e.txt","size":0},` +
		`{"digest":"` + digest("b") + `","executable":false,"path":"z\ud83d\ude00.txt","size":3}` +
		`],"version":1}`
	if got != want {
		t.Errorf("manifest\n got %s\nwant %s", got, want)
	}
}

func TestDigestOf(t *testing.T) {
	if got := DigestOf([]byte("abc")); got != "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("DigestOf(abc) = %s", got)
	}
}
