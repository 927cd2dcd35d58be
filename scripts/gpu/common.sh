# Sourced by run.sh and train.sh (with $here, the bundle, and $default_out set): the results
# folder $out (the first argument, or $default_out), the carried libraries on the loader's
# path, and the gzipped binaries unpacked into a temporary folder $bin.
out=${1:-$default_out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
for gz in "$here"/bin/*.gz; do
  gunzip -c "$gz" > "$bin/$(basename "$gz" .gz)"
  chmod +x "$bin/$(basename "$gz" .gz)"
done
