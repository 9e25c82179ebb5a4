#!/usr/bin/env bash
# Slot install throughput and SHA-256 throughput.
#
# (a) `icos slots install` of a GuestOS update-img.tar.zst into the spare
#     slot (B) of a GuestOS disk file, against a plain `dd` (bs=$BS,
#     conv=notrunc,fsync) of the same boot.img and root.img (extracted from
#     the upgrade image, sparse) into the same two partitions of the same
#     disk file. Before every run the disk file is copied afresh from the
#     extracted disk.img (sparse copy; grubenv stable on A) and the spare
#     slot's boot and root partitions are pre-filled with the images' data
#     (`dd conv=sparse`: what an earlier install of the same images leaves),
#     then the page cache is dropped. Both methods end with an fsync; the
#     install also reads its data back and samples the holes. Reported:
#     wall time and MiB/s of image bytes (boot.img + root.img sizes).
#     After the first install the partitions are compared with the images.
#     With BASELINE=<another icos binary> its `slots install` is timed the
#     same way (method `baseline`), e.g. a build from before a change.
# (b) SHA-256 of a $HASH_MIB MiB file of random bytes, cached in memory:
#     the sha2 crate (the installers' and the orchestrator's hashing; the
#     icos-diskwrite `sha256` example, release build) against sha256sum.
#
# Every measurement runs ROUNDS times; the load average before each run is
# recorded. Writes $WORK/results.tsv and prints medians and ranges. Needs
# root to drop the page cache.
#
# Env: OUT (holds guestos/disk-img.tar.zst and guestos/update-img.tar.zst;
#      default /var/tmp/bench-si), WORK (default /var/tmp/icos-bench-slots),
#      ROUNDS (default 3), BS (default 1M), HASH_MIB (default 2048),
#      ICOS (default target/release/icos), BASELINE (default none),
#      KEEP=1 keeps $WORK.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-/var/tmp/bench-si}
WORK=${WORK:-/var/tmp/icos-bench-slots}
ROUNDS=${ROUNDS:-3}
BS=${BS:-1M}
HASH_MIB=${HASH_MIB:-2048}
ICOS=${ICOS:-target/release/icos}
BASELINE=${BASELINE:-}
DISK_TAR=$OUT/guestos/disk-img.tar.zst
UPDATE=$OUT/guestos/update-img.tar.zst

for tool in zstd tar dd jq python3 sha256sum /usr/bin/time "$ICOS"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
for f in "$DISK_TAR" "$UPDATE"; do
    [ -f "$f" ] || { echo "missing: $f (icos build guestos --out $OUT)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (drop_caches)" >&2; exit 2; }

cargo build --release --locked -q -p icos-diskwrite --example sha256
SHA=target/release/examples/sha256

mkdir -p "$WORK"
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT

echo "extracting the images into $WORK ..." >&2
if [ ! -f "$WORK/pristine.img" ]; then
    zstd -dc "$DISK_TAR" | tar -xSf - -C "$WORK" disk.img
    mv "$WORK/disk.img" "$WORK/pristine.img"
fi
mkdir -p "$WORK/upd"
zstd -dc "$UPDATE" | tar -xSf - -C "$WORK/upd"
BOOT=$WORK/upd/boot.img
ROOT=$WORK/upd/root.img

show=$("$ICOS" slots show --disk "$WORK/pristine.img" --json)
slot=$(jq -r .upgrade_target <<<"$show")
[ "$slot" = B ] || { echo "the disk's upgrade target is $slot, expected B" >&2; exit 1; }
boot_off=$(jq '.slots[1].boot.offset' <<<"$show")
root_off=$(jq '.slots[1].root.offset' <<<"$show")
boot_size=$(stat -c %s "$BOOT")
root_size=$(stat -c %s "$ROOT")
image_bytes=$((boot_size + root_size))
echo "boot.img $boot_size bytes at $boot_off, root.img $root_size bytes at $root_off" >&2

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
load() { cut -d' ' -f1 /proc/loadavg; }

fresh_disk() {
    rm -f "$WORK/disk.img"
    cp --sparse=always "$WORK/pristine.img" "$WORK/disk.img"
    dd if="$BOOT" of="$WORK/disk.img" bs=1M seek="$boot_off" oflag=seek_bytes conv=sparse,notrunc status=none
    dd if="$ROOT" of="$WORK/disk.img" bs=1M seek="$root_off" oflag=seek_bytes conv=sparse,notrunc status=none
    drop_caches
}

RES=$WORK/results.tsv
printf 'what\tround\twall_s\tuser_s\tsys_s\tload\tbytes\n' >"$RES"
: >"$WORK/install-split.txt"

# One timed command (stdout to $out): wall, user and system CPU of the
# command and its children.
timed() {
    local what=$1 round=$2 bytes=$3 out=$4
    shift 4
    local l
    l=$(load)
    /usr/bin/time -o "$WORK/time.out" -f '%e %U %S' "$@" >"$out" 2>"$WORK/stderr.log" ||
        { cat "$WORK/stderr.log" >&2; exit 1; }
    read -r wall user sys <"$WORK/time.out"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$what" "$round" "$wall" "$user" "$sys" "$l" "$bytes" >>"$RES"
    echo "$what round $round: ${wall}s (load $l)" >&2
}

for round in $(seq 1 "$ROUNDS"); do
    fresh_disk
    timed install "$round" "$image_bytes" "$WORK/install.json" \
        "$ICOS" slots install --disk "$WORK/disk.img" --update "$UPDATE" --json
    echo "round $round: $(jq -c '{write_s, verify_s, members: [.members[] | {member, data_bytes, zeroed_bytes, zero_method, zero_checked}]}' "$WORK/install.json")" \
        >>"$WORK/install-split.txt"
    if [ "$round" = 1 ]; then
        cmp -n "$root_size" "$ROOT" <(dd if="$WORK/disk.img" bs=1M skip="$root_off" iflag=skip_bytes,count_bytes count="$root_size" status=none)
        cmp -n "$boot_size" "$BOOT" <(dd if="$WORK/disk.img" bs=1M skip="$boot_off" iflag=skip_bytes,count_bytes count="$boot_size" status=none)
        echo "install round 1: B_boot and B_root equal boot.img and root.img" >&2
    fi
    if [ -n "$BASELINE" ]; then
        fresh_disk
        timed baseline "$round" "$image_bytes" "$WORK/baseline.json" \
            "$BASELINE" slots install --disk "$WORK/disk.img" --update "$UPDATE" --json
        echo "baseline round $round: $(jq -c '{write_s, verify_s}' "$WORK/baseline.json")" \
            >>"$WORK/install-split.txt"
    fi
    fresh_disk
    timed dd "$round" "$image_bytes" /dev/null bash -c "
        dd if='$BOOT' of='$WORK/disk.img' bs=$BS seek=$boot_off oflag=seek_bytes conv=notrunc,fsync status=none &&
        dd if='$ROOT' of='$WORK/disk.img' bs=$BS seek=$root_off oflag=seek_bytes conv=notrunc,fsync status=none"
done
rm -f "$WORK/disk.img"

head -c $((HASH_MIB << 20)) /dev/urandom >"$WORK/hash.bin"
cat "$WORK/hash.bin" >/dev/null
hash_bytes=$((HASH_MIB << 20))
for round in $(seq 1 "$ROUNDS"); do
    timed sha2-crate "$round" "$hash_bytes" /dev/null "$SHA" "$WORK/hash.bin"
    timed sha256sum "$round" "$hash_bytes" /dev/null sha256sum "$WORK/hash.bin"
done
[ "$("$SHA" "$WORK/hash.bin" | cut -d' ' -f1)" = "$(sha256sum "$WORK/hash.bin" | cut -d' ' -f1)" ]

python3 - "$RES" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = {}
for r in rows:
    by.setdefault(r["what"], []).append(r)
print(f"{'what':<11} {'n':>2} {'wall median (range) s':>24} {'MiB/s median (range)':>26}  load")
for what, rs in by.items():
    wall = [float(r["wall_s"]) for r in rs]
    rate = [int(r["bytes"]) / 2**20 / max(w, 1e-9) for r, w in zip(rs, wall)]
    loads = ",".join(r["load"] for r in rs)
    print(f"{what:<11} {len(rs):>2} {statistics.median(wall):>9.2f} ({min(wall):.2f}-{max(wall):.2f}) "
          f"{statistics.median(rate):>12.0f} ({min(rate):.0f}-{max(rate):.0f})  {loads}")
ins = [float(r["wall_s"]) for r in by.get("install", [])]
dd = [float(r["wall_s"]) for r in by.get("dd", [])]
if ins and dd:
    ratio = statistics.median(dd) / statistics.median(ins)
    print(f"install throughput = {ratio * 100:.0f} % of plain dd (target >= 90 %)")
PY
cat "$WORK/install-split.txt"
echo "results: $RES" >&2
