# Sourced by the packaging scripts (package-deb.sh, package-container.sh) from the repository root, with `$name`
# set to the calling script's name for messages. Sets:
#   version     the [package] version of Cargo.toml
#   target_dir  $CARGO_TARGET_DIR (absolute) or ./target
#   bin         $SENSE_INGEST_RELEASE_BIN when set, else the binary of `cargo build --release --locked`
# and checks that the binary is executable and says `sense-ingest <version>`.
version=$(awk '/^\[package\]/ {p = 1; next} /^\[/ {p = 0} p && $1 == "version" {gsub(/"/, "", $3); print $3; exit}' Cargo.toml)
[ -n "$version" ] || { echo "$name: no [package] version in Cargo.toml" >&2; exit 1; }
target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in /*) ;; *) target_dir="$(pwd)/$target_dir" ;; esac

if [ -n "${SENSE_INGEST_RELEASE_BIN:-}" ]; then
  bin=$SENSE_INGEST_RELEASE_BIN
else
  cargo build --release --locked --bin sense-ingest >&2
  bin="$target_dir/release/sense-ingest"
fi
[ -x "$bin" ] || { echo "$name: $bin is not an executable" >&2; exit 1; }
bin_version=$("$bin" --version)
[ "$bin_version" = "sense-ingest $version" ] || {
  echo "$name: $bin says '$bin_version', Cargo.toml says $version" >&2
  exit 1
}
