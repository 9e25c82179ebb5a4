#!/usr/bin/env bash
# Image-write benchmark of the SetupOS installer against IC's method.
#
# For the HostOS and GuestOS archives of a SetupOS build ($OUT/hostos and
# $OUT/guestos disk-img.tar.zst), ROUNDS times, onto the same target file:
#   installer  icos-setupos-install write (inspect, stream, zero holes,
#              fsync, read back and compare, sample the holes)
#   ic-dd      zstd -dc ARCHIVE | tar -xOf - disk.img |
#              dd of=TARGET bs=4M conv=sparse,notrunc   (IC's SetupOS)
#   plain-dd   dd if=disk.img (already extracted, sparse) of=TARGET bs=4M
#              conv=sparse,notrunc: the plain write reference
# each followed by `sync`, with the page cache dropped before each run.
#
# The target is a sparse raw file of the image's size in $WORK (keep it on
# the file system QEMU's disks use). Before every run it is re-made and
# pre-filled with non-zero bytes (a) over the image's data extents, as an
# earlier install of the same layout leaves them, and (b) 1 MiB in the
# middle of every GiB the image leaves as a hole, as stray old data would
# be. So each method overwrites real data and has real holes to zero; after
# the run the stray blocks are read back and those still non-zero are
# counted (column stale_mib: what the method left of the old contents).
#
# Writes $WORK/results.tsv and prints a table. Needs root for dropping the
# page cache (else it says so and runs with a warm cache).
#
# Env: OUT (default out/), WORK (default /var/tmp/icos-bench-setupos),
#      ROUNDS (default 3), IMAGES (default "hostos guestos"),
#      METHODS (default "installer ic-dd plain-dd"), KEEP=1 keeps $WORK's
#      extracted images and target.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-out}
WORK=${WORK:-/var/tmp/icos-bench-setupos}
ROUNDS=${ROUNDS:-3}
IMAGES=${IMAGES:-hostos guestos}
METHODS=${METHODS:-installer ic-dd plain-dd}
MIB=$((1 << 20))

for tool in zstd tar dd python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench-setupos: $tool is needed" >&2; exit 2; }
done

echo "== building release binaries"
cargo build --release --locked -p icos-setupos-install-bin -p icos
INSTALL=$PWD/target/release/icos-setupos-install

for img in $IMAGES; do
    if [ ! -f "$OUT/$img/disk-img.tar.zst" ]; then
        echo "== $OUT/$img/disk-img.tar.zst missing: building SetupOS into $OUT"
        target/release/icos build setupos --out "$OUT"
        break
    fi
done

mkdir -p "$WORK"
TSV=$WORK/results.tsv
printf 'image\tmethod\tround\twall_s\tuser_s\tsys_s\tdata_mib\tlogical_mib\tlogical_mib_s\tdata_mib_s\tstale_mib\tload1\twrite_s\tsync_s\tverify_s\n' >"$TSV"

if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    DROP=1
else
    DROP=0
    echo "bench-setupos: cannot write /proc/sys/vm/drop_caches: runs start with a warm page cache" >&2
fi
drop_caches() {
    sync
    if [ "$DROP" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# prefill IMAGE TARGET: re-makes TARGET (sparse, IMAGE's size) and writes
# non-zero bytes over IMAGE's data extents and 1 MiB in the middle of every
# GiB that is a hole in IMAGE; prints the stray blocks' offsets.
prefill() {
    python3 - "$1" "$2" <<'EOF'
import os, sys
img, target = sys.argv[1], sys.argv[2]
MIB, GIB = 1 << 20, 1 << 30
src = os.open(img, os.O_RDONLY)
size = os.fstat(src).st_size
extents, at = [], 0
while at < size:
    try:
        start = os.lseek(src, at, os.SEEK_DATA)
    except OSError:
        break
    end = os.lseek(src, start, os.SEEK_HOLE)
    extents.append((start, end))
    at = end
os.close(src)
fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, size)
junk = bytes(((0xA5 ^ (i * 7)) & 0xFF) | 1 for i in range(256)) * (MIB // 256)
for start, end in extents:
    at = start
    while at < end:
        n = min(MIB, end - at)
        os.pwrite(fd, junk[:n], at)
        at += n
strays = []
for g in range(size // GIB):
    off = g * GIB + GIB // 2
    if all(off + MIB <= s or off >= e for s, e in extents):
        os.pwrite(fd, junk, off)
        strays.append(off)
os.fsync(fd)
os.close(fd)
print(" ".join(map(str, strays)))
EOF
}

# stale TARGET OFFSETS...: MiB of the stray blocks that are not zero.
stale() {
    python3 - "$@" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
left = sum(1 for off in sys.argv[2:] if any(os.pread(fd, 1 << 20, int(off))))
os.close(fd)
print(left)
EOF
}

for img in $IMAGES; do
    archive=$OUT/$img/disk-img.tar.zst
    mkdir -p "$WORK/$img"
    if [ ! -f "$WORK/$img/disk.img" ] || [ "$WORK/$img/disk.img" -ot "$archive" ]; then
        echo "== extracting $img disk.img (sparse) for plain-dd and the pre-fill"
        rm -f "$WORK/$img/disk.img"
        zstd -dc "$archive" | tar -xSf - -C "$WORK/$img" disk.img
    fi
done

run_one() { # img method round
    local img=$1 method=$2 round=$3
    local archive=$OUT/$img/disk-img.tar.zst disk=$WORK/$img/disk.img target=$WORK/target.img
    local strays size load json=$WORK/installer.json times=$WORK/times
    strays=$(prefill "$disk" "$target")
    size=$(stat -c %s "$disk")
    drop_caches
    load=$(cut -d' ' -f1 /proc/loadavg)
    case $method in
    installer)
        /usr/bin/time -f '%e %U %S' -o "$times" bash -c \
            '"$1" write --json --archive "$2" --target "$3" >"$4" 2>"$4.log" && sync' \
            _ "$INSTALL" "$archive" "$target" "$json"
        ;;
    ic-dd)
        /usr/bin/time -f '%e %U %S' -o "$times" bash -c \
            'set -o pipefail; zstd -dc "$1" | tar -xOf - disk.img |
             dd of="$2" bs=4M conv=sparse,notrunc status=none && sync' \
            _ "$archive" "$target"
        ;;
    plain-dd)
        /usr/bin/time -f '%e %U %S' -o "$times" bash -c \
            'dd if="$1" of="$2" bs=4M conv=sparse,notrunc status=none && sync' \
            _ "$disk" "$target"
        ;;
    esac
    local wall user sys left
    read -r wall user sys <"$times"
    # shellcheck disable=SC2086
    left=$(stale "$target" $strays)
    python3 - "$img" "$method" "$round" "$wall" "$user" "$sys" "$size" "$left" "$load" \
        "$WORK/$img/data_bytes" "$([ "$method" = installer ] && echo "$json")" >>"$TSV" <<'EOF'
import json, sys
img, method, rnd, wall, user, sys_s, size, left, load, data_file, js = sys.argv[1:]
wall, MIB = float(wall), 1 << 20
w = s = v = ""
if js:
    r = json.load(open(js))
    open(data_file, "w").write(str(r["data_bytes"]))
    w, s, v = (f"{r[k]:.2f}" for k in ("write_secs", "sync_secs", "verify_secs"))
try:
    data = int(open(data_file).read())
except OSError:
    data = 0
logical = int(size) / MIB
print("\t".join([img, method, rnd, f"{wall:.2f}", user, sys_s, f"{data / MIB:.1f}",
                 f"{logical:.0f}", f"{logical / wall:.1f}", f"{data / MIB / wall:.1f}",
                 left, load, w, s, v]))
EOF
    tail -n1 "$TSV"
}

echo "== $ROUNDS rounds; target $WORK/target.img; results $TSV"
for round in $(seq 1 "$ROUNDS"); do
    for img in $IMAGES; do
        for method in $METHODS; do
            run_one "$img" "$method" "$round"
        done
    done
done

if [ "${KEEP:-0}" != 1 ]; then
    rm -f "$WORK/target.img" "$WORK/installer.json" "$WORK/installer.json.log" "$WORK/times"
    for img in $IMAGES; do rm -f "$WORK/$img/disk.img"; done
fi

echo
echo "== results (wall time includes the final sync; MiB/s = MiB / wall)"
column -t -s $'\t' "$TSV"
echo
echo "== medians"
python3 - "$TSV" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
keys = sorted({(r["image"], r["method"]) for r in rows}, key=lambda k: (k[0], ["installer", "ic-dd", "plain-dd"].index(k[1]) if k[1] in ("installer", "ic-dd", "plain-dd") else 9))
print("image\tmethod\truns\twall_s\tcpu_s\tlogical_mib_s\tdata_mib_s\tstale_mib")
for k in keys:
    rs = [r for r in rows if (r["image"], r["method"]) == k]
    med = lambda f: statistics.median(float(r[f]) for r in rs)
    cpu = statistics.median(float(r["user_s"]) + float(r["sys_s"]) for r in rs)
    print(f"{k[0]}\t{k[1]}\t{len(rs)}\t{med('wall_s'):.1f}\t{cpu:.1f}\t{med('logical_mib_s'):.0f}\t{med('data_mib_s'):.1f}\t{med('stale_mib'):.0f}")
EOF
