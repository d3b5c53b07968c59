#!/usr/bin/env python3
"""Deterministic inputs for bench/delta.sh: a tree of "system files", its v2, and block rewrites.

    delta-images.py tree DIR BYTES SEED        files of varied sizes and content, BYTES in all
    delta-images.py patch DIR NEW_BYTES SEED   3 % of the files patched, NEW_BYTES of new files
    delta-images.py throughout DIR NEW_BYTES SEED  as patch, but every 4 KiB block of a patched
                                               file touched (a rebuilt package)
    delta-images.py rewrite IMAGE MODE SEED    5 % of IMAGE's 4 KiB blocks rewritten in place:
                                               MODE runs (256 KiB runs) or scattered (single blocks)

The same arguments give the same bytes (Python's seeded Mersenne Twister); files get a fixed
mtime so `mke2fs -d` copies the same times. Content kinds, by share of files: text from a
Zipf-like vocabulary (compresses about 4:1), "binaries" mixing random, low-entropy and zero
runs (about 3:2), and already-compressed data (random bytes, incompressible).
"""
import os
import random
import sys

BLOCK = 4096
MTIME = 1_700_000_000
TOPS = ["usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "usr/lib/python3/dist-packages",
        "usr/lib/modules/6.1.0/kernel/drivers", "usr/share/doc", "usr/share/locale",
        "usr/share/icons", "usr/libexec", "etc", "opt/vendor/lib", "var/lib/dpkg/info"]
# A package's files sit together, as in a real root filesystem: 8 packages under each top.
DIRS = [f"{top}/pkg{i}" for top in TOPS for i in range(8)]
# New files come with new packages (a build adds a few).
NEW_DIRS = [f"{top}/newpkg" for top in ("usr/lib/x86_64-linux-gnu", "usr/share/doc", "opt/vendor/lib")]


def vocabulary(rng):
    """256 entries, common words repeated, so a random byte picks a word with a skewed law."""
    words = [bytes(rng.choice(b"etaoinshrdlucmfwypvbgkqjxz") for _ in range(rng.randint(2, 9)))
             for _ in range(120)]
    table = [w for rank, w in enumerate(words) for _ in range(max(1, 12 // (rank + 1)))]
    table += [b"\n", b"(", b")", b"=", b"0", b"1", b"/usr/lib", b"return", b"struct"]
    return [table[i % len(table)] for i in range(256)]


def text(rng, vocab, n):
    out = b" ".join(map(vocab.__getitem__, rng.randbytes(n // 5 + 1)))
    return out[:n]


# "Binary" bytes: low-entropy runs map random bytes onto a few opcodes-like values.
LOW = bytes((i * 7) % 16 for i in range(256))


def binary(rng, n):
    parts, size = [], 0
    while size < n:
        k = rng.choice((512, 1024, 4096, 16384))
        kind = rng.random()
        if kind < 0.45:
            part = rng.randbytes(k).translate(LOW)
        elif kind < 0.8:
            part = rng.randbytes(k)
        else:
            part = bytes(k)
        parts.append(part)
        size += k
    return b"".join(parts)[:n]


def content(rng, vocab, n):
    kind = rng.random()
    if kind < 0.45:
        return text(rng, vocab, n)
    if kind < 0.85:
        return binary(rng, n)
    return rng.randbytes(n)


def file_size(rng):
    """Log-uniform from 256 B to 512 KiB, and one file in 50 from 1 to 8 MiB."""
    if rng.random() < 0.02:
        return rng.randint(1 << 20, 8 << 20)
    return int(2 ** rng.uniform(8, 19))


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (MTIME, MTIME))


def make_files(root, budget, rng, vocab, prefix, dirs):
    done, i = 0, 0
    while done < budget:
        size = min(file_size(rng), budget - done)
        path = os.path.join(root, rng.choice(dirs), f"{prefix}{i:05d}")
        write(path, content(rng, vocab, size))
        done += size
        i += 1


def tree(root, budget, seed):
    rng = random.Random(seed)
    make_files(root, budget, rng, vocabulary(rng), "f", DIRS)


def patch(root, new_bytes, seed, throughout=False):
    """3 % of the files, chosen by sorted path: 1 to 4 spans of up to 4 KiB rewritten (with
    `throughout`, a span of 8 to 64 bytes in every 4 KiB block of the file instead), and in
    one file in three an insertion of 100 to 2000 bytes, which shifts the rest of the file;
    then NEW_BYTES of new files in three new package directories."""
    rng = random.Random(seed)
    vocab = vocabulary(random.Random(seed))
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    for path in rng.sample(paths, max(1, len(paths) * 3 // 100)):
        with open(path, "rb") as f:
            data = bytearray(f.read())
        if throughout:
            for block in range(0, len(data), BLOCK):
                at = block + rng.randrange(min(BLOCK, len(data) - block))
                span = min(rng.randint(8, 64), len(data) - at)
                data[at:at + span] = content(rng, vocab, span)
        else:
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(max(1, len(data)))
                span = rng.randint(1, BLOCK)
                data[at:at + span] = content(rng, vocab, span)
        if rng.random() < 1 / 3:
            at = rng.randrange(max(1, len(data)))
            data[at:at] = content(rng, vocab, rng.randint(100, 2000))
        write(path, bytes(data))
    make_files(root, new_bytes, rng, vocab, "new", NEW_DIRS)


def rewrite(image, mode, seed):
    rng = random.Random(seed)
    blocks = os.path.getsize(image) // BLOCK
    target = blocks * 5 // 100
    if mode == "runs":
        run = (256 << 10) // BLOCK
        starts = rng.sample(range(blocks // run), max(1, target // run))
        spans = [(s * run, run) for s in starts]
    elif mode == "scattered":
        spans = [(b, 1) for b in rng.sample(range(blocks), target)]
    else:
        sys.exit(f"delta-images.py: unknown rewrite mode {mode!r} (runs, scattered)")
    with open(image, "r+b") as f:
        for start, count in sorted(spans):
            f.seek(start * BLOCK)
            f.write(rng.randbytes(count * BLOCK))


def main(argv):
    if len(argv) != 5:
        sys.exit(__doc__)
    cmd, path, arg, seed = argv[1], argv[2], argv[3], int(argv[4])
    if cmd == "tree":
        tree(path, int(arg), seed)
    elif cmd == "patch":
        patch(path, int(arg), seed)
    elif cmd == "throughout":
        patch(path, int(arg), seed, throughout=True)
    elif cmd == "rewrite":
        rewrite(path, arg, seed)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
