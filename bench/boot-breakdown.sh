#!/usr/bin/env bash
# Where boot time goes, from the host-timestamped console logs that
# scripts/bench-guestos.sh writes ($W/logs/boot-<image>-<run>.log):
#
#   firmware   QEMU start -> GRUB's first line (OVMF, BdsDxe)
#   grub+load  GRUB's first line -> kernel start (GRUB reads kernel and initrd
#              from ext4, EFI stub); kernel start = marker wall time - guest
#              uptime printed by the marker unit
#   kernel+initrd  kernel start -> systemd's first console line in the real
#              root (ours: "initramfs: switching root"; baseline: first
#              systemd status line, [UNSUPP]/[  OK  ])
#   systemd    -> GUESTOS BOOT SUCCESS
#
# Usage: bench/boot-breakdown.sh [W]    (prints a TSV and the medians)
set -euo pipefail
W=${1:-${W:-/var/tmp/icos-bench}}
printf 'image\trun\tmarker_s\tfirmware_s\tgrub_load_s\tkernel_initrd_s\tsystemd_s\n'
for L in "$W"/logs/boot-*-[0-9]*.log; do
  b=$(basename "$L" .log); img=${b#boot-}; run=${img##*-}; img=${img%-*}
  grep -aqE '^ *[0-9.]+ GUESTOS BOOT SUCCESS' "$L" || continue
  awk -v img="$img" -v run="$run" '
    !g && /GRUB: / {g=$1}
    !sw && (/switching root/ || /\[UNSUPP\]|\[  OK  \]|\[FAILED\]/) {sw=$1}
    $2=="GUESTOS" && $4=="SUCCESS" && !m {m=$1; match($0,/uptime=[0-9.]+/); up=substr($0,RSTART+7,RLENGTH-7)}
    END {k=m-up; if (!sw) sw=k;
         printf "%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\n", img, run, m, g, k-g, sw-k, m-sw}' "$L"
done | sort -k1,1 -k2n | awk -F'\t' '
  {print; for (c=3;c<=7;c++) v[$1,c,++n[$1,c]]=$c; imgs[$1]=1}
  END {for (i in imgs) {printf "median %s", i;
         for (c=3;c<=7;c++) {k=n[i,c]; for(a=1;a<=k;a++) x[a]=v[i,c,a];
           for(a=1;a<=k;a++) for(b=a+1;b<=k;b++) if (x[b]<x[a]) {t=x[a];x[a]=x[b];x[b]=t}
           printf "\t%.2f", (k%2)?x[(k+1)/2]:(x[k/2]+x[k/2+1])/2}
         printf "\n"}}'
