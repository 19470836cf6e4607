// Stand-in for the CUDA header of this name: the device code compiles against cuemu (../cuemu.h).
#pragma once
#include "../cuemu.h"
