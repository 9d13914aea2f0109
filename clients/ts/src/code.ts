// Code snapshots for tasks: the client side of CodeService (README.md, "Code upload").
//
// A snapshot is a manifest blob, canonical JSON {"files":[{"digest","executable","path","size"}...],
// "version":1} sorted by path, whose sha256 names it in TaskSpec.code_digest. Files are
// content-addressed blobs: only those flowd lacks are sent, packed into ~1 MB messages.
//
// What goes is simpler than in the Python SDK: every file under the root except `.git`,
// `node_modules`, `__pycache__` and virtualenvs (a directory holding a `pyvenv.cfg`).
// `.gitignore` and `.flowignore` are NOT read; keep big data out of the root. A symlink to a file
// uploads the file it points to; other symlinks, directory links included, are skipped. No hash
// cache is kept: each call reads every file. For a tree with no ignore files, the manifest is
// byte for byte the one the Python SDK makes.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, readdir, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  BlobChunkSchema,
  CodeService,
  UploadBlobsRequestSchema,
} from "../../../gen/ts/flowapi/v1/code_service_pb.js";

/** About this many bytes go in one UploadBlobs message (and in one read of a file). */
export const CHUNK_BYTES = 1024 * 1024;
const SKIPPED_DIRS: ReadonlySet<string> = new Set([".git", "node_modules", "__pycache__"]);
const VIRTUALENV_MARKER = "pyvenv.cfg";
const HASH_CONCURRENCY = 8;
const DIGESTS_PER_QUERY = 10_000; // keeps FindMissingBlobs requests well under 4 MB

/** One file of a snapshot. */
export interface ManifestEntry {
  /** POSIX, relative to the code root. */
  readonly path: string;
  /** "sha256:<hex>". */
  readonly digest: string;
  readonly size: number;
  readonly executable: boolean;
}

interface PlannedFile {
  readonly path: string;
  readonly source: string; // what to read (a symlink's target file)
  readonly size: number;
  readonly executable: boolean;
}

type Blob = { readonly digest: string; readonly size: number; readonly source: string | Uint8Array };

/** The files a task submitted from `root` would get, sorted by path (see the top of this file). */
async function listFiles(root: string): Promise<PlannedFile[]> {
  const files: PlannedFile[] = [];
  const pending = [""];
  while (pending.length > 0) {
    const directory = pending.pop() as string;
    const entries = await readdir(join(root, directory), { withFileTypes: true });
    if (directory !== "" && entries.some((e) => e.name === VIRTUALENV_MARKER && !e.isDirectory())) {
      continue; // a virtualenv
    }
    const found = await Promise.all(
      entries.map(async (entry): Promise<PlannedFile | undefined> => {
        const path = directory === "" ? entry.name : `${directory}/${entry.name}`;
        if (entry.name === ".git") {
          return undefined;
        }
        if (entry.isDirectory()) {
          if (!SKIPPED_DIRS.has(entry.name)) {
            pending.push(path);
          }
          return undefined;
        }
        if (!entry.isFile() && !entry.isSymbolicLink()) {
          return undefined; // sockets, FIFOs, devices
        }
        const source = join(root, path);
        const info = await stat(source).catch(() => undefined); // follows a symlink
        if (info === undefined || !info.isFile()) {
          return undefined;
        }
        return { path, source, size: info.size, executable: (info.mode & 0o111) !== 0 };
      }),
    );
    for (const file of found) {
      if (file !== undefined) {
        files.push(file);
      }
    }
  }
  // By code point, as Python sorts strings (UTF-8 byte order is code point order; UTF-16 is not).
  const keys = new Map(files.map((f) => [f, Buffer.from(f.path, "utf8")]));
  return files.sort((a, b) => Buffer.compare(keys.get(a) as Buffer, keys.get(b) as Buffer));
}

async function hashFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: CHUNK_BYTES })) {
    hash.update(chunk as Buffer);
  }
  return `sha256:${hash.digest("hex")}`;
}

async function mapConcurrently<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** A JSON string as Python's json.dumps writes it (ensure_ascii: everything outside ' '..'~' escaped). */
function pythonJsonString(text: string): string {
  return JSON.stringify(text).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** The canonical manifest bytes: sorted by path, compact JSON with sorted keys, as the Python SDK writes them. */
export function manifestBytes(entries: readonly ManifestEntry[]): Uint8Array {
  const sorted = [...entries].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  const files = sorted.map(
    (e) =>
      `{"digest":${pythonJsonString(e.digest)},"executable":${e.executable},` +
      `"path":${pythonJsonString(e.path)},"size":${e.size}}`,
  );
  return Buffer.from(`{"files":[${files.join(",")}],"version":1}`, "utf8");
}

/** "sha256:<hex>" of some bytes. */
export function digestOf(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/**
 * The UploadBlobs messages: whole small blobs packed together, a large one split into pieces at
 * increasing offsets (its first piece at offset 0), about CHUNK_BYTES per message. Files are read
 * as the stream goes, never whole.
 */
async function* uploadRequests(
  blobs: readonly Blob[],
): AsyncGenerator<MessageInitShape<typeof UploadBlobsRequestSchema>> {
  let pending: MessageInitShape<typeof BlobChunkSchema>[] = [];
  let pendingBytes = 0;
  for (const blob of blobs) {
    const handle = typeof blob.source === "string" ? await open(blob.source, "r") : undefined;
    try {
      let offset = 0;
      do {
        const room = Math.max(1, Math.min(blob.size - offset, CHUNK_BYTES - pendingBytes));
        let data: Uint8Array;
        if (handle === undefined) {
          data = (blob.source as Uint8Array).subarray(offset, offset + room);
        } else {
          const buffer = Buffer.allocUnsafe(blob.size === 0 ? 0 : room);
          const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
          if (bytesRead === 0 && blob.size > 0) {
            throw new Error(`${blob.source as string} shrank while uploading; upload again`);
          }
          data = buffer.subarray(0, bytesRead);
        }
        pending.push({ digest: blob.digest, size: BigInt(blob.size), offset: BigInt(offset), data });
        pendingBytes += data.length + 100; // ~ the framing of one BlobChunk
        offset += data.length;
        if (pendingBytes >= CHUNK_BYTES) {
          yield { chunks: pending };
          pending = [];
          pendingBytes = 0;
        }
      } while (offset < blob.size);
    } finally {
      await handle?.close();
    }
  }
  if (pending.length > 0) {
    yield { chunks: pending };
  }
}

/**
 * Uploads a snapshot of the directory `root` (only the blobs flowd lacks) and returns its digest,
 * "sha256:<hex>", for TaskSpec.code_digest. A file that changes while it is sent makes flowd
 * refuse it (a FlowError, VALIDATION_FAILED): call again.
 */
export async function uploadCode(code: Client<typeof CodeService>, root: string): Promise<string> {
  const files = await listFiles(resolve(root));
  const digests = await mapConcurrently(files, HASH_CONCURRENCY, (f) => hashFile(f.source));
  const manifest = manifestBytes(
    files.map((f, i) => ({ path: f.path, digest: digests[i] as string, size: f.size, executable: f.executable })),
  );
  const manifestDigest = digestOf(manifest);

  const wanted = [...new Set([...digests, manifestDigest])].sort();
  const missing = new Set<string>();
  for (let start = 0; start < wanted.length; start += DIGESTS_PER_QUERY) {
    const reply = await code.findMissingBlobs({ digests: wanted.slice(start, start + DIGESTS_PER_QUERY) });
    reply.missingDigests.forEach((d) => missing.add(d));
  }
  const blobs: Blob[] = [];
  files.forEach((f, i) => {
    const digest = digests[i] as string;
    if (missing.delete(digest)) {
      blobs.push({ digest, size: f.size, source: f.source }); // the same content under two names goes once
    }
  });
  if (missing.has(manifestDigest)) {
    blobs.push({ digest: manifestDigest, size: manifest.length, source: manifest });
  }
  if (blobs.length > 0) {
    await code.uploadBlobs(uploadRequests(blobs));
  }
  return manifestDigest;
}
