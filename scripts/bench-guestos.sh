#!/usr/bin/env bash
# GuestOS benchmarks (docs/BENCHMARKS.md): cold build, no-op rebuild, rebuild
# after a change to the icos binary, artifact sizes, and boot time to
# "GUESTOS BOOT SUCCESS" under OVMF + TCG side by side with a plain Debian
# bookworm systemd image booted the same way.
#
# Run as root on a fresh clone after scripts/prereqs.sh:
#
#   scripts/bench-guestos.sh [all|build|rebuilds|fullcold|baseline|boot|later|diag|kernel|summary]
#
# build = cold build + rebuilds (no-op, changed icos binary, sizes)
# boot  = first boots: every boot starts from the pristine disk (a throwaway
#         overlay), so ours formats its LUKS2 var and store every time
# later = later boots: a copy of each disk is booted once in place (its first
#         boot, not measured), then every measured boot is another boot of
#         that same disk in place (--in-place)
# kernel = time from GRUB's "boot" to the initramfs' first line with the
#         image's own kernel and with another kernel (KERNEL=FILE, a vmlinuz)
#         put into a copy's A_boot; the other kernel's boots stop at the
#         initramfs (its modules are the image's), which is all this measures
#
# Environment:
#   W=DIR          work folder [/var/tmp/icos-bench]; everything is written there,
#                  the repository itself is never modified
#   N=5            boots per image (alternating ours / baseline)
#   ICOS=FILE      the icos binary that drives the benchmark [built here with
#                  cargo build --release --locked -p icos; that first compile is
#                  timed and reported separately, NOT part of the cold build]
#   SEED=DIR       pre-seed the new cache's content-addressed .deb store from
#                  DIR/sha256 [~/.cache/icos if it has one; SEED= for none]
#   FULL_COLD=1    also time a build with a completely empty cache (downloads
#                  every .deb from the lock's mirror)
#   MAX_WAIT=180   seconds to wait for a quiet machine before each boot
#   MAX_TRIES=3    boots per slot at most (a boot that was not quiet or failed is repeated)
#   QUIET=1.0      "quiet" = CPU busy (cores, from /proc/stat over 3 s) below this
#   TIMEOUT=300    seconds per boot (icos run --timeout; QEMU is killed after)
#   MEM=4096 VCPUS=2   guest memory (MiB) and vCPUs for both images
#   KERNEL=FILE    kernel phase: the vmlinuz to compare with the image's own
#   DISK_TAR=FILE  boot phases: take our disk from this disk-img.tar.zst (e.g. a
#                  build of the working tree) instead of the build phase's
#   BASELINE_LOCK=FILE  baseline phase: install the baseline from this lock
#                  [the package list's names, suites dropped, locked afresh:
#                  plain bookworm, with bookworm's own kernel]
#
# Results: $W/results.tsv (one line per measurement), $W/boot.tsv (first
# boots) and $W/boot-later.tsv (later boots), one line per boot; console logs
# with host timestamps in $W/logs/ (later boots: boot-later-<image>-<run>.log).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${W:-/var/tmp/icos-bench}
N=${N:-5}
MAX_WAIT=${MAX_WAIT:-180}
QUIET=${QUIET:-1.0}
TIMEOUT=${TIMEOUT:-300}
MEM=${MEM:-4096}
VCPUS=${VCPUS:-2}
SEED=${SEED-$HOME/.cache/icos}
export TZ=UTC LC_ALL=C.UTF-8
# the version is fixed so that the clone and its changed copy differ only in code
VERSION=bench

[ "$(id -u)" = 0 ] || { echo "error: run as root (mmdebstrap --mode=root)" >&2; exit 2; }
for t in git cargo mmdebstrap mke2fs mkfs.vfat mcopy sfdisk qemu-system-x86_64; do
  command -v "$t" >/dev/null || { echo "error: $t missing: run scripts/prereqs.sh" >&2; exit 1; }
done
# the benchmark's own tools (not needed by icos itself), installed idempotently
need=()
command -v bc >/dev/null || need+=(bc)
[ -x /usr/bin/time ] || need+=(time)
perl -MTime::HiRes -e1 2>/dev/null || need+=(perl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y --no-install-recommends "${need[@]}" >&2
fi
mkdir -p "$W/logs"
RES=$W/results.tsv
[ -f "$RES" ] || echo -e "what\tseconds_or_bytes\tnote" > "$RES"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
record() { echo -e "$1\t$2\t${3:-}" >> "$RES"; log "RESULT $1 = $2 ${3:-}"; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

# CPU busy (in cores) over a 3 s window, from /proc/stat: what other
# processes use while we are idle. (The 1-minute load average would still
# count our own previous QEMU for a minute after it exits.)
busy_cores() {
  local a b
  a=($(head -1 /proc/stat)); sleep 3; b=($(head -1 /proc/stat))
  local idle=$(( (b[4]+b[5]) - (a[4]+a[5]) )) tot=0 i
  for i in 1 2 3 4 5 6 7 8; do tot=$(( tot + b[i] - a[i] )); done
  echo "scale=2; $(nproc) * ($tot - $idle) / $tot" | bc
}
psi10() { awk '/^some/{sub("avg10=","",$2); print $2}' /proc/pressure/cpu; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# Waits up to MAX_WAIT s until busy_cores < QUIET; prints "busy psi load quiet?".
wait_quiet() {
  local t0=$SECONDS b
  while :; do
    b=$(busy_cores)
    if [ "$(echo "$b < $QUIET" | bc)" = 1 ]; then echo "$b $(psi10) $(load1) quiet"; return; fi
    if (( SECONDS - t0 >= MAX_WAIT )); then echo "$b $(psi10) $(load1) busy"; return; fi
    sleep 5
  done
}

# ---------------------------------------------------------------- setup
setup() {
  if [ ! -d "$W/src/.git" ]; then
    log "cloning $REPO (committed HEAD) into $W/src"
    git clone -q --no-hardlinks "$REPO" "$W/src"
  fi
  if [ -z "${ICOS:-}" ]; then
    if [ -x "$W/src/target/release/icos" ]; then
      (cd "$W/src" && cargo build --release --locked -p icos -q)
    else
      log "first cargo compile of icos (driver binary; not part of the cold build)"
      local t0; t0=$(now)
      (cd "$W/src" && cargo build --release --locked -p icos -q)
      record first_cargo_compile_s "$(since "$t0")" "cargo build --release --locked -p icos in a fresh clone"
    fi
    ICOS=$W/src/target/release/icos
  fi
  "$ICOS" --version >/dev/null
}

build() { # NAME SOURCE CACHE [extra args...]
  local name=$1 src=$2 cache=$3; shift 3
  local t0 rc=0 l0; t0=$(now); l0="load1 $(load1) psi $(psi10)"
  "$ICOS" build guestos --source "$src" --cache "$cache" --out "$W/out-$name" \
    --version "$VERSION" --json "$@" > "$W/logs/build-$name.json" 2> "$W/logs/build-$name.err" || rc=$?
  local s; s=$(since "$t0")
  [ $rc = 0 ] || { tail -20 "$W/logs/build-$name.err" >&2; echo "error: build $name failed" >&2; exit 1; }
  grep -a '^\[' "$W/logs/build-$name.err" | sed 's/^/    /' >&2 || true
  record "build_${name}_s" "$s" "wall clock of icos build guestos; at start $l0, at end load1 $(load1) psi $(psi10)${NOTE:+; $NOTE}"
}

# ---------------------------------------------------------------- builds
phase_build() {
  setup
  # (a) cold build: new, empty stage cache; a fresh clone, so stage 2 compiles
  # icos from scratch in src/target/image
  git -C "$W/src" checkout -q -- bin/icos/src/main.rs
  rm -rf "$W/cache-cold" "$W/src/target/image" "$W"/out-*
  mkdir -p "$W/cache-cold"
  local note="empty stage cache, no target/image"
  if [ -n "$SEED" ] && [ -d "$SEED/sha256" ]; then
    cp -a "$SEED/sha256" "$W/cache-cold/sha256"
    note="$note; .deb store sha256/ pre-seeded ($(ls "$W/cache-cold/sha256" | wc -l) files)"
  fi
  log "cold build ($note)"
  NOTE=$note build cold "$W/src" "$W/cache-cold"
  phase_rebuilds
}

phase_rebuilds() {
  setup

  # (b) no-op rebuild, same cache and tree
  log "no-op rebuild"
  build noop "$W/src" "$W/cache-cold"

  # (c) one Rust binary changed: the icos binary shipped in the image. The
  # change is made in the clone (a copy; the repository is untouched) at the
  # same path, so cargo rebuilds incrementally with the same RUSTFLAGS (the
  # build's --remap-path-prefix names the source path); same cache. A new
  # static in bin/icos/src/main.rs makes the binary's bytes differ.
  local main=$W/src/bin/icos/src/main.rs
  printf '\n/// Benchmark change: makes this icos binary differ.\n#[used]\nstatic BENCH_CHANGE: [u8; 20] = *b"%-20s";\n' \
    "bench-$(date +%s)" >> "$main"
  log "rebuild after changing the icos binary (bin/icos/src/main.rs in the clone)"
  build changed "$W/src" "$W/cache-cold" || { git -C "$W/src" checkout -q -- bin/icos/src/main.rs; exit 1; }
  git -C "$W/src" checkout -q -- bin/icos/src/main.rs
  cmp -s "$W/out-noop/guestos/SHA256SUMS" "$W/out-changed/guestos/SHA256SUMS" &&
    { echo "error: the changed binary gave the same artifacts" >&2; exit 1; }

  # (d) sizes
  local g=$W/out-cold/guestos
  record disk_img_tar_zst_bytes "$(stat -c %s "$g/disk-img.tar.zst")"
  record update_img_tar_zst_bytes "$(stat -c %s "$g/update-img.tar.zst")"
  rm -rf "$W/disk" && mkdir -p "$W/disk"
  tar -xf "$g/disk-img.tar.zst" --use-compress-program=zstd -C "$W/disk" --sparse
  record disk_img_apparent_bytes "$(stat -c %s "$W/disk/disk.img")"
  record disk_img_allocated_bytes "$(( $(stat -c %b "$W/disk/disk.img") * $(stat -c %B "$W/disk/disk.img") ))"

  [ "${FULL_COLD:-0}" = 1 ] && phase_fullcold
  return 0
}

# A completely empty cache and no target/image: every .deb is downloaded from
# the lock's mirror and icos is compiled from scratch in stage 2.
phase_fullcold() {
  setup
  rm -rf "$W/cache-empty" "$W/src/target/image" "$W/out-fullcold"; mkdir -p "$W/cache-empty"
  log "fully cold build (empty cache: downloads every .deb; no target/image)"
  NOTE="empty cache incl. sha256/, no target/image" build fullcold "$W/src" "$W/cache-empty"
}

# ---------------------------------------------------------------- baseline
# Plain Debian bookworm: the SAME locked packages (icos packages repo +
# mmdebstrap with the lock's requested list), Debian's stock initramfs-tools
# initrd, plain read-write ext4 root, booted by the SAME GRUB EFI binary (our
# esp partition, byte for byte). Changes from stock: the marker unit and the
# masked serial-getty@ttyS0 (it would hang up ttyS0 and eat the marker).
phase_baseline() {
  setup
  our_disk >/dev/null
  [ -f "$W/disk/disk.img" ] || { echo "error: run the build phase first (or give DISK_TAR)" >&2; exit 1; }
  local B=$W/baseline; rm -rf "$B"; mkdir -p "$B"
  # Plain bookworm: the names of the image's package list without a
  # "/suite" (so bookworm's own kernel, not bookworm-backports'), locked here
  # against the same archive. BASELINE_LOCK=FILE takes that lock instead
  # (e.g. the image's own lock: a plain Debian image with the image's kernel).
  local names include lock=${BASELINE_LOCK:-}
  names=$(grep -v '^\s*#' "$W/src/images/guestos/packages.list" | tr -s ' \n' '\n' | grep -v '^$' | sed 's,/.*,,')
  include=$(paste -sd, <<<"$names")
  if [ -z "$lock" ]; then
    printf '%s\n' $names > "$B/packages.list"
    "$ICOS" packages lock --list "$B/packages.list" -o "$B/packages.lock" >&2
    lock=$B/packages.lock
  fi
  local cache=$W/cache-cold; [ -d "$cache/sha256" ] || cache=$HOME/.cache/icos
  "$ICOS" packages repo --lock "$lock" --cache "$cache" -o "$B/repo" >&2
  log "baseline mmdebstrap (--include=$include)"
  local t0; t0=$(now)
  SOURCE_DATE_EPOCH=1700000000 mmdebstrap --variant=required --mode=root --format=directory \
    --include="$include" --aptopt='Acquire::Languages "none"' --aptopt='Apt::Install-Recommends "false"' \
    --aptopt='APT::Sandbox::User "root"' bookworm "$B/root" "deb [trusted=yes] copy://$B/repo/ ./" \
    > "$W/logs/baseline-mmdebstrap.log" 2>&1
  record baseline_mmdebstrap_s "$(since "$t0")"
  local R=$B/root kver
  kver=$(ls "$R/lib/modules")
  record baseline_kernel "$kver" "from $lock"
  [ -f "$R/boot/initrd.img-$kver" ] || { echo "error: no stock initrd in baseline" >&2; exit 1; }
  record baseline_stock_initrd_bytes "$(stat -c %s "$R/boot/initrd.img-$kver")"
  local pu=0fb0a5e1-0000-4000-8000-0000000000b3
  echo "PARTUUID=$pu / ext4 rw,errors=remount-ro 0 1" > "$R/etc/fstab"
  install -m0644 "$REPO/bench/baseline-marker.service" "$R/etc/systemd/system/guestos-marker.service"
  ln -sf /etc/systemd/system/guestos-marker.service "$R/etc/systemd/system/multi-user.target.wants/"
  ln -sf /dev/null "$R/etc/systemd/system/serial-getty@ttyS0.service"
  echo baseline > "$R/etc/hostname"
  rm -f "$R"/var/cache/apt/archives/*.deb
  mke2fs -q -F -t ext4 -L root -d "$R" "$B/root.img" 2G
  # grub partition: our grub-early.cfg (inside BOOTX64.EFI) reads ($boot_disk,gpt2)/grub.cfg
  cat > "$B/grub.cfg" <<EOT
set root=(\$boot_disk,gpt3)
echo "GRUB: baseline plain Debian"
linux /boot/vmlinuz-$kver root=PARTUUID=$pu ro console=ttyS0 quiet panic=-1
initrd /boot/initrd.img-$kver
boot
EOT
  truncate -s 100M "$B/grub.img"; mkfs.vfat -F 32 -n GRUB "$B/grub.img" >/dev/null
  mcopy -i "$B/grub.img" "$B/grub.cfg" ::/grub.cfg
  # our esp partition, byte for byte (GPT partition 1 of our disk)
  local start size
  read -r start size < <(sfdisk -d "$W/disk/disk.img" | awk -F'[=,]' '/disk.img1 /{gsub(/ /,""); print $2, $4}')
  dd if="$W/disk/disk.img" of="$B/esp.img" bs=512 skip="$start" count="$size" status=none
  local img=$B/baseline.img; rm -f "$img"
  local esp_s=2048 grub_s=$((2048 + size)) root_s=$((2048 + size + 204800))
  local root_n=$(( $(stat -c %s "$B/root.img") / 512 ))
  truncate -s $(( (root_s + root_n + 2048) * 512 )) "$img"
  sfdisk -q "$img" <<EOT
label: gpt
start=$esp_s, size=$size, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
start=$grub_s, size=204800, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=grub
start=$root_s, size=$root_n, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$pu, name=root
EOT
  dd if="$B/esp.img" of="$img" bs=512 seek=$esp_s conv=notrunc,sparse status=none
  dd if="$B/grub.img" of="$img" bs=512 seek=$grub_s conv=notrunc,sparse status=none
  dd if="$B/root.img" of="$img" bs=512 seek=$root_s conv=notrunc,sparse status=none
  rm -f "$B/root.img"
  record baseline_disk_allocated_bytes "$(( $(stat -c %b "$img") * 512 ))"
  log "baseline image: $img"
}

# ---------------------------------------------------------------- boot
# One boot with `icos run guestos` (identical QEMU command line for both
# images: q35, OVMF, TCG, $VCPUS vCPUs, $MEM MiB, the raw disk behind a qcow2
# overlay -- or the raw disk itself for later boots --, the CONFIG USB media,
# user-mode NIC, virtio-rng). Console lines get
# host timestamps (seconds since the start of icos run).
# BOOT_TSV is the table the boot is added to; RUN_ARGS extra icos run flags
# (--in-place for later boots); LOG_TAG a prefix of the log names.
BOOT_TSV=$W/boot.tsv RUN_ARGS=() LOG_TAG=
boot_once() { # NAME IMAGE RUN
  local name=$1 img=$2 i=$3 L
  L=$W/logs/boot-$LOG_TAG$name-$i.log
  local pre; pre=$(wait_quiet)
  local a b; a=($(head -1 /proc/stat))
  local rc=0
  /usr/bin/time -f '%U %S %e' -o "$L.time" \
    timeout --kill-after=10 $((TIMEOUT + 60)) \
    "$ICOS" run guestos --image "$img" --accel tcg --memory "$MEM" --vcpus "$VCPUS" \
      --timeout "$TIMEOUT" --json "${RUN_ARGS[@]}" 2>&1 >"$L.json" \
    | perl -MTime::HiRes=time -ne 'BEGIN{$|=1;$t0=time} printf "%7.2f %s", time-$t0, $_' > "$L" || rc=$?
  b=($(head -1 /proc/stat))
  local tot=0 idle=$(( (b[4]+b[5]) - (a[4]+a[5]) )) k
  for k in 1 2 3 4 5 6 7 8; do tot=$(( tot + b[k] - a[k] )); done
  local hz; hz=$(getconf CLK_TCK)
  read -r u s e < "$L.time"
  # CPU used by other processes during the boot, in cores
  local other; other=$(echo "scale=2; (($tot - $idle)/$hz - $u - $s) / $e" | bc)
  local el st up g k0 ini sd
  el=$(grep -o '"elapsed_s": *[0-9.]*' "$L.json" | grep -o '[0-9.]*$' || echo -)
  st=$(grep -o '"status": *"[a-z]*"' "$L.json" | grep -o '"[a-z]*"$' | tr -d '"' || echo error)
  up=$(grep -aom1 'GUESTOS BOOT SUCCESS uptime=[0-9.]*' "$L" | sed 's/.*uptime=//' || true)
  ts() { grep -aEm1 "$1" "$L" | awk '{print $1}' || true; }
  g=$(ts 'GRUB: ')                                   # GRUB's first message
  # kernel start (wall) = marker wall time - guest uptime at the marker
  k0=$( [ -n "$up" ] && [ "$el" != - ] && echo "$el - $up" | bc || true)
  ini=$(ts 'initramfs:|Loading, please wait|Begin: ')
  sd=$(ts '\[UNSUPP\]|\[  OK  \]|\[FAILED\]|systemd\[1\]')  # systemd's first status line
  echo -e "$name\t$i\t$st\t$el\t${up:--}\t${g:--}\t${k0:--}\t${ini:--}\t${sd:--}\t$(echo "$u + $s" | bc)\t$other\t$(echo "$pre" | tr ' ' '\t')" >> "$BOOT_TSV"
  log "boot $LOG_TAG$name #$i: $st elapsed=$el s guest_uptime=${up:--} other_cpu=$other pre=[$pre]"
  [ "$st" = success ] && [ "$(echo "$other < $QUIET" | bc)" = 1 ] && [ "${pre##* }" = quiet ]
}

# Our disk for the boot phases: the build phase's, or DISK_TAR's.
our_disk() {
  if [ -n "${DISK_TAR:-}" ]; then
    mkdir -p "$W/disk"
    if [ ! -f "$W/disk/disk.img" ] || [ "$DISK_TAR" -nt "$W/disk/disk.img" ]; then
      rm -f "$W/disk/disk.img"
      tar --zstd -xSf "$DISK_TAR" -C "$W/disk" disk.img
    fi
  fi
  echo "$W/disk/disk.img"
}

boot_series() { # OURS BASE
  local ours=$1 base=$2 i tries
  echo -e "image\trun\tstatus\tmarker_s\tguest_uptime_s\tgrub_s\tkernel_start_s\tinitramfs_s\tsystemd_s\tqemu_cpu_s\tother_cpu_cores\tpre_busy_cores\tpre_psi_avg10\tpre_load1\tpre_state" > "$BOOT_TSV"
  for i in $(seq 1 "$N"); do
    for pair in "guestos:$ours" "baseline:$base"; do
      tries=0
      # repeat a boot disturbed by other processes (at most twice)
      until boot_once "${pair%%:*}" "${pair#*:}" "$i" || (( ++tries >= ${MAX_TRIES:-3} )); do
        log "repeating $LOG_TAG${pair%%:*} #$i (not quiet or failed)"
        sed -i '$s/^/#/' "$BOOT_TSV"
      done
    done
  done
}

phase_boot() {
  setup
  local ours base=$W/baseline/baseline.img
  ours=$(our_disk)
  [ -f "$ours" ] && [ -f "$base" ] || { echo "error: run build and baseline first" >&2; exit 1; }
  BOOT_TSV=$W/boot.tsv RUN_ARGS=() LOG_TAG=
  boot_series "$ours" "$base"
}

# The unmeasured first boot of a disk copy, in place: IMG LOG_PREFIX
# (writes LOG_PREFIX.json and LOG_PREFIX.log; exits on failure).
first_boot_in_place() {
  local img=$1 out=$2
  log "first boot of $img in place (not measured)"
  timeout --kill-after=10 $((TIMEOUT + 60)) \
    "$ICOS" run guestos --image "$img" --in-place --accel tcg --memory "$MEM" --vcpus "$VCPUS" \
      --timeout "$TIMEOUT" --json > "$out.json" 2> "$out.log" \
    || { tail -20 "$out.log" >&2; echo "error: first boot of $img failed" >&2; exit 1; }
}

# Later boots: copies of both disks, each booted once in place (its first
# boot: ours formats LUKS2 var and store, Debian commits its machine-id; not
# measured), then N measured boots of the same disks in place, alternating.
phase_later() {
  setup
  local ours base=$W/baseline/baseline.img L=$W/later x
  ours=$(our_disk)
  [ -f "$ours" ] && [ -f "$base" ] || { echo "error: run build and baseline first" >&2; exit 1; }
  mkdir -p "$L"
  cp --sparse=always "$ours" "$L/guestos.img"
  cp --sparse=always "$base" "$L/baseline.img"
  for x in guestos baseline; do
    first_boot_in_place "$L/$x.img" "$W/logs/later-first-$x"
  done
  BOOT_TSV=$W/boot-later.tsv RUN_ARGS=(--in-place) LOG_TAG=later-
  boot_series "$L/guestos.img" "$L/baseline.img"
}

# Diagnostics (not part of the measurement): one boot of each image with
# kernel and systemd messages on the console, from copies whose grub.cfg
# appends $DBG to the kernel command line.
phase_diag() {
  setup
  our_disk >/dev/null
  local D=$W/diag O=$((206848 * 512)) x
  local DBG="loglevel=7 systemd.show_status=1 systemd.log_level=info systemd.log_target=kmsg printk.devkmsg=on"
  mkdir -p "$D"
  cp --sparse=always "$W/disk/disk.img" "$D/guestos.img"
  cp --sparse=always "$W/baseline/baseline.img" "$D/baseline.img"
  for x in guestos baseline; do mcopy -o -i "$D/$x.img@@$O" ::/grub.cfg "$D/$x.grub.cfg"; done
  sed -i "s|^if linux /vmlinuz \$BOOT_ARGS; then|if linux /vmlinuz \$BOOT_ARGS $DBG; then|" "$D/guestos.grub.cfg"
  sed -i "s|panic=-1\$|panic=-1 $DBG|" "$D/baseline.grub.cfg"
  for x in guestos baseline; do
    grep -q "$DBG" "$D/$x.grub.cfg" || { echo "error: could not patch $x grub.cfg" >&2; exit 1; }
    mcopy -o -i "$D/$x.img@@$O" "$D/$x.grub.cfg" ::/grub.cfg
  done
  for x in guestos baseline; do
    wait_quiet >/dev/null
    timeout --kill-after=10 $((TIMEOUT + 60)) \
      "$ICOS" run guestos --image "$D/$x.img" --accel tcg --memory "$MEM" --vcpus "$VCPUS" \
        --timeout "$TIMEOUT" --json 2>&1 >"$D/$x.json" \
      | perl -MTime::HiRes=time -ne 'BEGIN{$|=1;$t0=time} printf "%7.2f %s", time-$t0, $_' > "$D/$x.log" || true
    log "diag $x: $(grep -aE '^ *[0-9.]+ GUESTOS BOOT' "$D/$x.log" | cut -c1-80)"
    grep -aE 'Run /init|Freeing unused kernel|Startup finished|switching root|Reached target' "$D/$x.log" | cut -c1-160 >&2 || true
  done
}

# Kernel start-up: GRUB's "boot" -> the initramfs' first console line, for the
# image's kernel and for $KERNEL in a copy of the same disk (later boots in
# place; the grub.cfg of both copies echoes a line right before "boot").
phase_kernel() {
  setup
  [ -n "${KERNEL:-}" ] && [ -f "$KERNEL" ] || { echo "error: set KERNEL=FILE (a vmlinuz)" >&2; exit 2; }
  command -v debugfs >/dev/null || { echo "error: debugfs missing (e2fsprogs)" >&2; exit 1; }
  our_disk >/dev/null
  local K=$W/kernel O=$((206848 * 512)) x start size i
  mkdir -p "$K"
  cp --sparse=always "$W/disk/disk.img" "$K/own.img"
  first_boot_in_place "$K/own.img" "$K/first"
  mcopy -o -i "$K/own.img@@$O" ::/grub.cfg "$K/grub.cfg"
  sed -i 's|^    boot$|    echo "GRUB: loaded, booting"\n    boot|' "$K/grub.cfg"
  grep -q 'GRUB: loaded, booting' "$K/grub.cfg" || { echo "error: could not patch grub.cfg" >&2; exit 1; }
  mcopy -o -i "$K/own.img@@$O" "$K/grub.cfg" ::/grub.cfg
  cp --sparse=always "$K/own.img" "$K/other.img"
  read -r start size < <(sfdisk -d "$K/other.img" | awk -F'[=,]' '/name="A_boot"/ {gsub(/ /,""); print $2, $4}')
  dd if="$K/other.img" of="$K/a_boot.img" bs=512 skip="$start" count="$size" status=none
  debugfs -w -R "rm /vmlinuz" "$K/a_boot.img" >/dev/null 2>&1
  debugfs -w -R "write $KERNEL /vmlinuz" "$K/a_boot.img" >/dev/null 2>&1
  debugfs -R "stat /vmlinuz" "$K/a_boot.img" 2>/dev/null | grep -q "Size: $(stat -c %s "$KERNEL")" \
    || { echo "error: could not write $KERNEL into A_boot" >&2; exit 1; }
  dd if="$K/a_boot.img" of="$K/other.img" bs=512 seek="$start" conv=notrunc,sparse status=none
  rm -f "$K/a_boot.img"
  echo -e "kernel\trun\tgrub_boot_s\tinitramfs_s\tboot_to_initramfs_s" > "$W/kernel.tsv"
  for i in $(seq 1 "$N"); do
    for x in own other; do
      wait_quiet >/dev/null
      timeout --kill-after=10 60 \
        "$ICOS" run guestos --image "$K/$x.img" --in-place --accel tcg --memory "$MEM" --vcpus "$VCPUS" \
          --timeout 30 --json 2>&1 >/dev/null \
        | perl -MTime::HiRes=time -ne 'BEGIN{$|=1;$t0=time} printf "%7.2f %s", time-$t0, $_' > "$K/$x-$i.log" || true
      local g n d
      g=$(grep -aEm1 'GRUB: loaded, booting' "$K/$x-$i.log" | awk '{print $1}' || true)
      n=$(grep -aEm1 '^ *[0-9.]+ initramfs: ' "$K/$x-$i.log" | awk '{print $1}' || true)
      [ -n "$g" ] && [ -n "$n" ] || { log "kernel $x #$i: no GRUB or initramfs line ($K/$x-$i.log)"; continue; }
      d=$(echo "$n - $g" | bc)
      echo -e "$x\t$i\t$g\t$n\t$d" >> "$W/kernel.tsv"
      log "kernel $x #$i: $d s from GRUB's boot to the initramfs"
    done
  done
}

summary() {
  local t
  for t in "$W/boot.tsv" "$W/boot-later.tsv"; do
    [ -f "$t" ] || continue
    echo "== boots (valid lines of $t)"
    awk -F'\t' 'NR>1 && $1 !~ /^#/ && $3=="success" {print $1, $4}' "$t" | sort -k1,1 -k2n |
      awk '{v[$1]=v[$1]" "$2; n[$1]++} END {for (k in v) {split(substr(v[k],2),a," "); m=(n[k]%2)?a[(n[k]+1)/2]:(a[n[k]/2]+a[n[k]/2+1])/2; printf "%s n=%d median=%.2f min=%.2f max=%.2f\n", k, n[k], m, a[1], a[n[k]]; med[k]=m}; if (med["baseline"]>0) printf "ratio guestos/baseline (medians) = %.3f (target <= 0.70)\n", med["guestos"]/med["baseline"]}'
  done
  [ -f "$RES" ] && { echo "== $RES"; cat "$RES"; }
}

case "${1:-all}" in
  all) phase_build; phase_baseline; phase_boot; summary ;;
  build) phase_build ;;
  rebuilds) phase_rebuilds ;;
  fullcold) phase_fullcold ;;
  diag) phase_diag ;;
  kernel) phase_kernel ;;
  baseline) phase_baseline ;;
  boot) phase_boot; summary ;;
  later) phase_later; summary ;;
  summary) summary ;;
  *) echo "usage: $0 [all|build|rebuilds|fullcold|baseline|boot|later|diag|kernel|summary]" >&2; exit 2 ;;
esac
