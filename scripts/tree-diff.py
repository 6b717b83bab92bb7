#!/usr/bin/env python3
"""Compare two mounted root filesystems entry by entry.

    tree-diff.py LEFT RIGHT

For every path (lstat, never following symlinks): type, permission bits (with set-id and
sticky), owner, group, size, content (sha256), symlink target, device numbers, extended
attributes, file mtimes (whole seconds), and hard-link groups. Prints one line per difference
and exits 1 if there is any, 0 if the trees are the same.
"""
import hashlib
import os
import stat
import sys


def entries(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = path
    return out


def describe(path):
    st = os.lstat(path)
    d = {
        "type": stat.S_IFMT(st.st_mode),
        "mode": oct(stat.S_IMODE(st.st_mode)),
        "owner": (st.st_uid, st.st_gid),
    }
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        d["size"] = st.st_size
        d["sha256"] = h.hexdigest()
        d["mtime"] = int(st.st_mtime)
    elif stat.S_ISLNK(st.st_mode):
        d["target"] = os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        d["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
        d["xattrs"] = {n: os.getxattr(path, n, follow_symlinks=False) for n in names}
    except OSError:
        d["xattrs"] = {}
    return d, (st.st_ino if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 else None)


def link_groups(inodes):
    groups = {}
    for rel, ino in inodes.items():
        if ino is not None:
            groups.setdefault(ino, []).append(rel)
    return sorted(tuple(sorted(g)) for g in groups.values() if len(g) > 1)


def main():
    left, right = sys.argv[1], sys.argv[2]
    le, re_ = entries(left), entries(right)
    problems = []
    for rel in sorted(set(le) - set(re_)):
        problems.append(f"only in {left}: {rel}")
    for rel in sorted(set(re_) - set(le)):
        problems.append(f"only in {right}: {rel}")
    li, ri = {}, {}
    common = sorted(set(le) & set(re_))
    for rel in common:
        (ld, li[rel]), (rd, ri[rel]) = describe(le[rel]), describe(re_[rel])
        for key in sorted(set(ld) | set(rd)):
            if ld.get(key) != rd.get(key):
                problems.append(f"{rel}: {key} {ld.get(key)!r} != {rd.get(key)!r}")
    if link_groups(li) != link_groups(ri):
        problems.append(f"hard links differ: {link_groups(li)} != {link_groups(ri)}")
    for p in problems:
        print(p)
    print(f"{len(common)} common entries, {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
