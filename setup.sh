#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build plexserve: CMake and libclang for HiGHS
# (the `milp` feature builds it from source through highs-sys; bindgen needs libclang.so itself, and
# libclang-cpp alone, which some images carry, does not count). Safe to run again.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 || need+=(libclang-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "setup.sh: cargo not found; install Rust (rustup) first" >&2; exit 1; }
