// The tile count of conv3x3's Winograd-domain buffers, shared by the kernels (csrc/cpu/conv3x3.cpp) and
// the Python module (csrc/module.cpp), which DIN's dense block asks before allocating those buffers.
#pragma once

#include <cstdint>

namespace din_fast {

// Tiles per image of an H x W feature map: the last dimension of a (36, C, B * tiles) buffer.
int64_t winograd_tiles(int64_t h, int64_t w);

}  // namespace din_fast
