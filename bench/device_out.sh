# Sourced by bench/gpu_check.sh: keep a device call's results within what comes back from $OUT.
#
# The device tool returns at most 8 files from $OUT (the device README's limits), and a run writes
# about 20: a run on 2026-11-27 lost its benchmark tables that way. So the run writes into a
# working folder, $RUN, and only one archive lands in $OUT: $OUT/gpu-check.tar.gz, packed every
# PACK_EVERY seconds while the run goes on and once at its end. A run killed at its time limit
# still returns what it had a few seconds before. Each archive is written beside its final name and
# renamed, so a reader never sees half of one. bench/ingest_sparse24.py takes the archive (or the
# folder holding it) as its RUN_DIR.

ARCHIVE_NAME=gpu-check.tar.gz

device_out_pack() {
  # GNU tar exits 1 when a file changed while it read it (a log still being written): the archive
  # is whole all the same, and the next pack has the rest
  tar czf "$OUT/.$ARCHIVE_NAME.part" -C "$RUN" . 2>/dev/null
  [ $? -le 1 ] && mv -f "$OUT/.$ARCHIVE_NAME.part" "$OUT/$ARCHIVE_NAME"
}

# device_out_start: make $OUT and the working folder $RUN, and start packing in the background
device_out_start() {
  mkdir -p "$OUT"
  RUN=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
  (while sleep "${PACK_EVERY:-15}"; do device_out_pack; done) &
  PACKER=$!
}

# device_out_finish: stop the background packer, pack everything once more, and remove $RUN
device_out_finish() {
  kill "$PACKER" 2>/dev/null
  wait "$PACKER" 2>/dev/null
  device_out_pack && rm -rf "$RUN"
  rm -f "$OUT/.$ARCHIVE_NAME.part"
}
