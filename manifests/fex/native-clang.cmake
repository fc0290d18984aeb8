# CMake toolchain file: build FEX natively on an arm64 host with clang and lld (FEX refuses GCC,
# which is what CMake would pick by default). Used by `cargo xtask fex` on arm64 hosts.
set(CMAKE_C_COMPILER clang)
set(CMAKE_CXX_COMPILER clang++)
set(CMAKE_ASM_COMPILER clang)
