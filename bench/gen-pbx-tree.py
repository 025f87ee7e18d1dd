#!/usr/bin/env python3
"""Generate (or change) a PBX-like tree for bench/sync.sh.

  gen-pbx-tree.py small ROOT N      N voicemail/recording files of 1-64 KiB,
                                    100 per directory, plus 300 configs
  gen-pbx-tree.py big ROOT N        N recordings of 100-256 MiB (the last is
                                    exactly 256 MiB)
  gen-pbx-tree.py touch ROOT PCT [list]   rewrite PCT % of the small files
                                    (list: print their paths too)
  gen-pbx-tree.py poke FILE         change one byte in the middle of FILE
  gen-pbx-tree.py append FILE       append 1 MiB to FILE

Contents are random (seeded, so runs are repeatable): audio would compress
a little, and neither tool compresses here anyway.
"""
import os
import random
import sys

KIB = 1024
MIB = 1024 * KIB


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def small_files(root):
    spool = os.path.join(root, "spool/voicemail/default")
    for dirpath, _dirs, names in os.walk(spool):
        for n in names:
            yield os.path.join(dirpath, n)


def main():
    what, target = sys.argv[1], sys.argv[2]
    rng = random.Random(5)
    if what == "small":
        n = int(sys.argv[3])
        for i in range(n):
            d = os.path.join(target, "spool/voicemail/default", f"{1000 + i // 100}", "INBOX")
            write(os.path.join(d, f"msg{i % 100:04d}.wav"), rng.randbytes(rng.randint(1, 64) * KIB))
        for i in range(300):
            conf = "".join(f"[ext{j}]\ntype=friend\nsecret={rng.getrandbits(64):x}\n" for j in range(rng.randint(5, 100)))
            write(os.path.join(target, "etc/asterisk", f"conf{i:03d}.conf"), conf.encode())
    elif what == "big":
        n = int(sys.argv[3])
        for i in range(n):
            size = 256 * MIB if i == n - 1 else rng.randint(100, 256) * MIB
            path = os.path.join(target, "monitor", f"big{i:02d}.wav")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                left = size
                while left:
                    step = min(left, 8 * MIB)
                    f.write(os.urandom(step))
                    left -= step
    elif what == "touch":
        pct = float(sys.argv[3])
        # New content each time (a fixed seed would write the same bytes
        # again: only the mtimes would change).
        rng = random.Random(os.urandom(8))
        files = sorted(small_files(target))
        chosen = rng.sample(files, max(1, int(len(files) * pct / 100)))
        for p in chosen:
            write(p, rng.randbytes(rng.randint(1, 64) * KIB))
        print(len(chosen))
        if sys.argv[4:] == ["list"]:
            print("\n".join(chosen))
    elif what == "poke":
        size = os.path.getsize(target)
        with open(target, "r+b") as f:
            f.seek(size // 2)
            b = f.read(1)
            f.seek(size // 2)
            f.write(bytes([b[0] ^ 0xFF]))
    elif what == "append":
        with open(target, "ab") as f:
            f.write(os.urandom(MIB))
    else:
        sys.exit(f"unknown command {what}")


if __name__ == "__main__":
    main()
