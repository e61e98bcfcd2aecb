// A small reader for FlexBuffers maps of scalars (the format of TFLite custom
// op options), written from the FlexBuffers format description: the root is at
// the end of the buffer (last byte: root byte width, byte before: packed type
// of the root = type << 2 | log2(bit width)); a map is a vector of values
// preceded by [keys-vector offset, keys byte width, size] and followed by one
// packed-type byte per value; keys are offsets to NUL-terminated strings.
#ifndef TFCOMPRESS_KERNELS_FLEXBUFFERS_LITE_H_
#define TFCOMPRESS_KERNELS_FLEXBUFFERS_LITE_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

namespace tfc {

class FlexMap {
 public:
  // Parses `buf` (`len` bytes). ok() is false if it is not a map.
  FlexMap(const uint8_t* buf, size_t len) : buf_(buf), len_(len) {
    if (buf == nullptr || len < 3) return;
    const size_t root_width = buf[len - 1];
    const uint8_t packed = buf[len - 2];
    if (!ValidWidth(root_width) || len < 2 + root_width) return;
    const uint8_t* root = buf + len - 2 - root_width;
    if ((packed >> 2) != kMap) return;
    uint64_t off;
    if (!ReadUInt(root, root_width, &off) || off > static_cast<uint64_t>(root - buf)) return;
    vals_ = root - off;
    width_ = size_t{1} << (packed & 3);
    uint64_t size, keys_off, keys_width;
    if (vals_ < buf_ + 3 * width_) return;
    if (!ReadUInt(vals_ - width_, width_, &size) ||
        !ReadUInt(vals_ - 2 * width_, width_, &keys_width) ||
        !ReadUInt(vals_ - 3 * width_, width_, &keys_off))
      return;
    const uint8_t* keys_loc = vals_ - 3 * width_;
    if (!ValidWidth(keys_width) || keys_off > static_cast<uint64_t>(keys_loc - buf_)) return;
    keys_ = keys_loc - keys_off;
    keys_width_ = keys_width;
    // A map cannot hold more entries than the buffer has bytes; checking this first keeps
    // size * width below from overflowing.
    if (size > len_) return;
    size_ = static_cast<size_t>(size);
    if (!InBounds(vals_, size_ * width_ + size_) || !InBounds(keys_, size_ * keys_width_)) return;
    ok_ = true;
  }

  bool ok() const { return ok_; }
  size_t size() const { return ok_ ? size_ : 0; }

  // Name of the i-th key (nullptr if malformed).
  const char* Key(size_t i) const {
    if (!ok_ || i >= size_) return nullptr;
    const uint8_t* loc = keys_ + i * keys_width_;
    uint64_t off;
    if (!ReadUInt(loc, keys_width_, &off) || off > static_cast<uint64_t>(loc - buf_)) return nullptr;
    const char* s = reinterpret_cast<const char*>(loc - off);
    if (memchr(s, 0, static_cast<size_t>(buf_ + len_ - loc + off)) == nullptr) return nullptr;
    return s;
  }

  bool Has(const char* key) const { return Find(key) >= 0; }

  // Integer (or bool, or integral float) value of `key`. False if absent or
  // not a number.
  bool GetInt(const char* key, int64_t* out) const {
    const long idx = Find(key);
    if (idx < 0) return false;
    const uint8_t packed = vals_[size_ * width_ + idx];
    const int type = packed >> 2;
    const size_t child_width = size_t{1} << (packed & 3);
    const uint8_t* loc = vals_ + static_cast<size_t>(idx) * width_;
    switch (type) {
      case kInt: return ReadInt(loc, width_, out);
      case kUInt:
      case kBool: {
        uint64_t u;
        if (!ReadUInt(loc, width_, &u)) return false;
        *out = static_cast<int64_t>(u);
        return true;
      }
      case kIndirectInt:
      case kIndirectUInt: {
        uint64_t off;
        if (!ReadUInt(loc, width_, &off) || off > static_cast<uint64_t>(loc - buf_)) return false;
        const uint8_t* p = loc - off;
        if (!InBounds(p, child_width)) return false;
        if (type == kIndirectInt) return ReadInt(p, child_width, out);
        uint64_t u;
        if (!ReadUInt(p, child_width, &u)) return false;
        *out = static_cast<int64_t>(u);
        return true;
      }
      case kFloat: {
        double d;
        if (width_ == 4) {
          float f;
          memcpy(&f, loc, 4);
          d = f;
        } else if (width_ == 8) {
          memcpy(&d, loc, 8);
        } else {
          return false;
        }
        // Casting NaN, +-inf or a value outside int64's range to int64 is undefined
        // behaviour: check the range first (NaN fails both comparisons).
        if (!(d >= -9.2e18 && d <= 9.2e18)) return false;
        if (d != static_cast<double>(static_cast<int64_t>(d))) return false;  // not integral
        *out = static_cast<int64_t>(d);
        return true;
      }
      default: return false;
    }
  }

 private:
  enum { kInt = 1, kUInt = 2, kFloat = 3, kIndirectInt = 6, kIndirectUInt = 7, kMap = 9, kBool = 26 };

  static bool ValidWidth(uint64_t w) { return w == 1 || w == 2 || w == 4 || w == 8; }
  bool InBounds(const uint8_t* p, size_t n) const {
    return p >= buf_ && p <= buf_ + len_ && n <= static_cast<size_t>(buf_ + len_ - p);
  }
  bool ReadUInt(const uint8_t* p, size_t w, uint64_t* out) const {
    if (!ValidWidth(w) || !InBounds(p, w)) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < w; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);  // little endian
    *out = v;
    return true;
  }
  bool ReadInt(const uint8_t* p, size_t w, int64_t* out) const {
    uint64_t u;
    if (!ReadUInt(p, w, &u)) return false;
    if (w < 8 && (u >> (8 * w - 1)) & 1) u |= ~uint64_t{0} << (8 * w);  // sign-extend
    *out = static_cast<int64_t>(u);
    return true;
  }
  long Find(const char* key) const {
    for (size_t i = 0; i < size(); ++i) {
      const char* k = Key(i);
      if (k != nullptr && strcmp(k, key) == 0) return static_cast<long>(i);
    }
    return -1;
  }

  const uint8_t* buf_;
  size_t len_;
  const uint8_t* vals_ = nullptr;
  const uint8_t* keys_ = nullptr;
  size_t width_ = 0, keys_width_ = 0, size_ = 0;
  bool ok_ = false;
};

}  // namespace tfc

#endif  // TFCOMPRESS_KERNELS_FLEXBUFFERS_LITE_H_
