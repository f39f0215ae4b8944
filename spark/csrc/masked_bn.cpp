// BatchNorm over the visible sites of a masked map, on the CPU: statistics, apply (+ReLU) and gradient.
//
// The composite version (spark/masked_bn.py) spends about eight passes over a map where the native BatchNorm
// spends three, because every mask product, centring and square is its own kernel. These kernels do each step
// in one pass (two for the statistics). NCHW kernels sweep whole planes, weighing each site by the 0/1 mask: a
// mask cell is at most 16 sites wide in ResNet maps, and starting a vector loop per visible stretch of a plane
// cost more than reading the masked sites. NHWC kernels skip masked sites, a whole row of channels each.
// Masked sites of every output are exact zeros.
//
// Maps are (B, C, H, W), contiguous (NCHW) or channels_last (NHWC); the mask is bool (B, 1, H, W), contiguous.
// Per-channel values (mean, scale, shift, ...) come in the accumulation type: double for double maps, float
// otherwise (bf16 maps are computed in float and rounded once). Sums add up per plane (NCHW) or visible stretch
// (NHWC) in that type, vectorised, and those partial sums in double.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using at::Tensor;

// The visible sites as a 0/1 mask and as runs [start, end) of site indices (h * W + w), grouped by image.
struct VisibleRuns {
  std::vector<float> keep;     // (B, sites): 1 at visible sites
  std::vector<int64_t> starts, ends;
  std::vector<int64_t> first;  // runs of image b: [first[b], first[b + 1])
  int64_t count = 0;
};

VisibleRuns visible_runs(const Tensor& mask, int64_t batch, int64_t sites) {
  const bool* m = mask.data_ptr<bool>();
  VisibleRuns runs;
  runs.first.reserve(batch + 1);
  runs.keep.assign(m, m + batch * sites);
  for (int64_t b = 0; b < batch; ++b) {
    runs.first.push_back(static_cast<int64_t>(runs.starts.size()));
    const bool* row = m + b * sites;
    for (int64_t s = 0; s < sites;) {
      if (!row[s]) { ++s; continue; }
      int64_t e = s;
      while (e < sites && row[e]) ++e;
      runs.starts.push_back(s);
      runs.ends.push_back(e);
      runs.count += e - s;
      s = e;
    }
  }
  runs.first.push_back(static_cast<int64_t>(runs.starts.size()));
  return runs;
}

// A map's shape and which of the two layouts it is stored in.
struct Map {
  int64_t batch, channels, sites;
  bool channels_last;
};

Map check_map(const Tensor& x, const Tensor& mask) {
  TORCH_CHECK(x.dim() == 4, "masked_bn: expected a (B, C, H, W) map, got ", x.dim(), " dimensions");
  TORCH_CHECK(x.device().is_cpu() && mask.device().is_cpu(), "masked_bn: CPU tensors only");
  const bool nchw = x.is_contiguous();
  TORCH_CHECK(nchw || x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "masked_bn: the map must be contiguous or channels_last");
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.is_contiguous() && mask.dim() == 4 && mask.size(1) == 1 &&
                  mask.size(0) == x.size(0) && mask.size(2) == x.size(2) && mask.size(3) == x.size(3),
              "masked_bn: the mask must be a contiguous bool (B, 1, H, W) tensor matching the map");
  return {x.size(0), x.size(1), x.size(2) * x.size(3), !nchw};
}

template <typename acc_t>
const acc_t* values(const Tensor& t, const Map& map) {
  TORCH_CHECK(t.is_contiguous() && t.numel() == map.channels && t.scalar_type() == c10::CppTypeToScalarType<acc_t>::value,
              "masked_bn: per-channel values must be contiguous (C,) tensors in the accumulation type");
  return t.data_ptr<acc_t>();
}

// Calls f(c0, c1) on blocks of channels in parallel (NHWC kernels walk rows of a block of channels).
template <typename F>
void for_channel_blocks(const Map& map, const F& f) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t block = std::max<int64_t>(8, (map.channels + threads - 1) / threads);
  at::parallel_for(0, (map.channels + block - 1) / block, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) f(i * block, std::min(map.channels, (i + 1) * block));
  });
}

// ---- statistics: count, mean and sum of squared deviations from the mean (two passes, in double) ----

// Sum over a plane of x (or of (x - center)^2 if `squares`), weighed by `keep`. (Reductions are vectorised only
// as plain functions: a reduction variable captured by a lambda kept GCC's loops scalar.)
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
acc_t plane_sum(const scalar_t* x, const float* keep, int64_t sites, acc_t center, bool squares) {
  acc_t sum = 0;
  if (squares) {
#pragma omp simd reduction(+ : sum)
    for (int64_t s = 0; s < sites; ++s) {
      const acc_t d = static_cast<acc_t>(x[s]) - center;
      sum += keep[s] * d * d;
    }
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t s = 0; s < sites; ++s) sum += keep[s] * static_cast<acc_t>(x[s]);
  }
  return sum;
}

template <typename scalar_t>
void stats_kernel(const Tensor& x, const Map& map, const VisibleRuns& runs, double* mean, double* m2) {
  const scalar_t* data = x.data_ptr<scalar_t>();
  const double n = static_cast<double>(std::max<int64_t>(runs.count, 1));
  if (!map.channels_last) {
    using acc_t = at::opmath_type<scalar_t>;
    at::parallel_for(0, map.channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        double sum = 0, dev = 0;  // each plane's partial sum in acc_t (vectorised), added up in double
        for (int64_t b = 0; b < map.batch; ++b)
          sum += plane_sum(data + (b * map.channels + c) * map.sites, runs.keep.data() + b * map.sites, map.sites,
                           acc_t(0), false);
        const double mu = sum / n;
        for (int64_t b = 0; b < map.batch; ++b)
          dev += plane_sum(data + (b * map.channels + c) * map.sites, runs.keep.data() + b * map.sites, map.sites,
                           static_cast<acc_t>(mu), true);
        mean[c] = mu;
        m2[c] = dev;
      }
    });
    return;
  }
  for_channel_blocks(map, [&](int64_t c0, int64_t c1) {
    std::vector<double> sum(c1 - c0, 0.0), dev(c1 - c0, 0.0);
    auto rows = [&](const auto& visit) {
      for (int64_t b = 0; b < map.batch; ++b)
        for (int64_t r = runs.first[b]; r < runs.first[b + 1]; ++r)
          for (int64_t s = runs.starts[r]; s < runs.ends[r]; ++s) visit(data + (b * map.sites + s) * map.channels + c0);
    };
    rows([&](const scalar_t* row) {
      for (int64_t c = 0; c < c1 - c0; ++c) sum[c] += static_cast<double>(row[c]);
    });
    for (int64_t c = 0; c < c1 - c0; ++c) sum[c] /= n;
    rows([&](const scalar_t* row) {
      for (int64_t c = 0; c < c1 - c0; ++c) {
        const double d = static_cast<double>(row[c]) - sum[c];
        dev[c] += d * d;
      }
    });
    std::copy(sum.begin(), sum.end(), mean + c0);
    std::copy(dev.begin(), dev.end(), m2 + c0);
  });
}

std::tuple<Tensor, Tensor, Tensor> masked_bn_stats(const Tensor& x, const Tensor& mask) {
  const Map map = check_map(x, mask);
  const VisibleRuns runs = visible_runs(mask, map.batch, map.sites);
  auto options = x.options().dtype(at::kDouble);
  Tensor mean = at::empty({map.channels}, options), m2 = at::empty({map.channels}, options);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "masked_bn_stats", [&] {
    stats_kernel<scalar_t>(x, map, runs, mean.data_ptr<double>(), m2.data_ptr<double>());
  });
  const auto acc = at::toOpMathType(x.scalar_type());
  return {at::scalar_tensor(static_cast<double>(runs.count), options.dtype(acc)), mean.to(acc), m2.to(acc)};
}

// ---- elementwise passes (zeros written at masked sites) ----

// Calls f(offset, c, 0, sites, keep) for every plane (NCHW; f writes 0 where keep is 0), or
// f(offset, -1, 0, C, nullptr) for every visible row (NHWC; masked rows are zeroed here), in parallel; `offset`
// indexes the map's data.
template <typename scalar_t, typename F>
void for_visible(const Map& map, const VisibleRuns& runs, scalar_t* out, const F& f) {
  if (!map.channels_last) {
    at::parallel_for(0, map.batch * map.channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t b = plane / map.channels;
        f(plane * map.sites, plane % map.channels, int64_t(0), map.sites, runs.keep.data() + b * map.sites);
      }
    });
    return;
  }
  at::parallel_for(0, map.batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      int64_t done = 0;
      const int64_t image = b * map.sites * map.channels;
      for (int64_t r = runs.first[b]; r < runs.first[b + 1]; ++r) {
        std::fill(out + image + done * map.channels, out + image + runs.starts[r] * map.channels, scalar_t(0));
        for (int64_t s = runs.starts[r]; s < runs.ends[r]; ++s)
          f(image + s * map.channels, int64_t(-1), int64_t(0), map.channels, static_cast<const float*>(nullptr));
        done = runs.ends[r];
      }
      std::fill(out + image + done * map.channels, out + image + map.sites * map.channels, scalar_t(0));
    }
  });
}

// Per-channel values of one call, in the accumulation type.
template <typename acc_t>
struct Channels {
  const acc_t *mean, *scale, *shift;
};

// The normalised value (x - mean) * scale + shift, computed alike in every kernel (no FMA contraction), so that
// the backward pass recomputes the forward's ReLU decisions exactly.
template <typename acc_t>
inline acc_t normalized(acc_t centered, acc_t scale, acc_t shift) {
  return centered * scale + shift;
}

// What of the output gradient reaches the normalised value: all of it at visible sites (keep = 1), none at masked
// ones, and with a ReLU none where its input was not > 0 (as torch's ReLU backward).
template <bool Relu, typename acc_t>
inline acc_t passed(acc_t centered, acc_t scale, acc_t shift, float keep) {
  if constexpr (Relu) return acc_t(keep) * acc_t(normalized(centered, scale, shift) > acc_t(0));
  return acc_t(keep);
}

// Calls f with the ReLU flag as a compile-time constant: a run-time flag in the loops would stop vectorisation.
template <typename F>
void with_relu(bool relu, const F& f) {
  if (relu) f(std::true_type{});
  else f(std::false_type{});
}

template <bool Relu, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void apply_kernel(const scalar_t* in, scalar_t* out, const Map& map, const VisibleRuns& runs, Channels<acc_t> p) {
  for_visible(map, runs, out, [&](int64_t offset, int64_t c, int64_t begin, int64_t end, const float* keep) {
    if (c >= 0) {  // one channel, sites begin..end
      const acc_t mc = p.mean[c], ac = p.scale[c], tc = p.shift[c];
#pragma omp simd
      for (int64_t s = begin; s < end; ++s) {
        const acc_t y = normalized(static_cast<acc_t>(in[offset + s]) - mc, ac, tc);
        out[offset + s] = static_cast<scalar_t>(keep[s] == 0 || (Relu && y < 0) ? acc_t(0) : y);
      }
    } else {  // one visible site, channels begin..end
#pragma omp simd
      for (int64_t k = begin; k < end; ++k) {
        const acc_t y = normalized(static_cast<acc_t>(in[offset + k]) - p.mean[k], p.scale[k], p.shift[k]);
        out[offset + k] = static_cast<scalar_t>(Relu && y < 0 ? acc_t(0) : y);
      }
    }
  });
}

// Sums over a plane of the passed gradient and of it times (x - mean).
template <bool Relu, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
std::pair<acc_t, acc_t> plane_grad_sums(const scalar_t* g, const scalar_t* in, const float* keep, int64_t sites,
                                        acc_t mean, acc_t scale, acc_t shift) {
  acc_t sum = 0, sum_centered = 0;
#pragma omp simd reduction(+ : sum, sum_centered)
  for (int64_t s = 0; s < sites; ++s) {
    const acc_t centered = static_cast<acc_t>(in[s]) - mean;
    const acc_t gv = passed<Relu>(centered, scale, shift, keep[s]) * static_cast<acc_t>(g[s]);
    sum += gv;
    sum_centered += gv * centered;
  }
  return {sum, sum_centered};
}

template <bool Relu, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void grad_sums_kernel(const scalar_t* g, const scalar_t* in, const Map& map, const VisibleRuns& runs,
                      Channels<acc_t> p, double* sum_g, double* sum_gx) {
  if (!map.channels_last) {
    at::parallel_for(0, map.channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const acc_t mc = p.mean[c], ac = p.scale[c], tc = p.shift[c];
        double s1 = 0, s2 = 0;  // each plane's partial sums in acc_t (vectorised), added up in double
        for (int64_t b = 0; b < map.batch; ++b) {
          const int64_t offset = (b * map.channels + c) * map.sites;
          const auto [part1, part2] = plane_grad_sums<Relu>(g + offset, in + offset, runs.keep.data() + b * map.sites,
                                                            map.sites, mc, ac, tc);
          s1 += part1;
          s2 += part2;
        }
        sum_g[c] = s1;
        sum_gx[c] = s2;
      }
    });
    return;
  }
  for_channel_blocks(map, [&](int64_t c0, int64_t c1) {
    std::vector<acc_t> part1(c1 - c0), part2(c1 - c0);  // one visible row's worth, added up in double per run
    for (int64_t b = 0; b < map.batch; ++b)
      for (int64_t r = runs.first[b]; r < runs.first[b + 1]; ++r) {
        std::fill(part1.begin(), part1.end(), acc_t(0));
        std::fill(part2.begin(), part2.end(), acc_t(0));
        for (int64_t s = runs.starts[r]; s < runs.ends[r]; ++s) {
          const scalar_t *gr = g + (b * map.sites + s) * map.channels + c0, *xr = in + (b * map.sites + s) * map.channels + c0;
          const acc_t *mc = p.mean + c0, *ac = p.scale + c0, *tc = p.shift + c0;
#pragma omp simd
          for (int64_t k = 0; k < c1 - c0; ++k) {
            const acc_t centered = static_cast<acc_t>(xr[k]) - mc[k];
            const acc_t gv = passed<Relu>(centered, ac[k], tc[k], 1.0f) * static_cast<acc_t>(gr[k]);
            part1[k] += gv;
            part2[k] += gv * centered;
          }
        }
        for (int64_t k = 0; k < c1 - c0; ++k) {
          sum_g[c0 + k] += part1[k];
          sum_gx[c0 + k] += part2[k];
        }
      }
  });
}

template <bool Relu, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void grad_input_kernel(const scalar_t* g, const scalar_t* in, scalar_t* out, const Map& map,
                       const VisibleRuns& runs, Channels<acc_t> p, const acc_t* k1, const acc_t* k2) {
  for_visible(map, runs, out, [&](int64_t offset, int64_t c, int64_t begin, int64_t end, const float* keep) {
    if (c >= 0) {
      const acc_t mc = p.mean[c], ac = p.scale[c], tc = p.shift[c], uc = k1[c], vc = k2[c];
#pragma omp simd
      for (int64_t s = begin; s < end; ++s) {
        const acc_t centered = static_cast<acc_t>(in[offset + s]) - mc;
        const acc_t gv = passed<Relu>(centered, ac, tc, keep[s]) * static_cast<acc_t>(g[offset + s]);
        out[offset + s] = static_cast<scalar_t>(keep[s] == 0 ? acc_t(0) : ac * gv - uc - centered * vc);
      }
    } else {
#pragma omp simd
      for (int64_t k = begin; k < end; ++k) {
        const acc_t centered = static_cast<acc_t>(in[offset + k]) - p.mean[k];
        const acc_t gv = passed<Relu>(centered, p.scale[k], p.shift[k], 1.0f) * static_cast<acc_t>(g[offset + k]);
        out[offset + k] = static_cast<scalar_t>(p.scale[k] * gv - k1[k] - centered * k2[k]);
      }
    }
  });
}

template <typename acc_t>
Channels<acc_t> channels(const Map& map, const Tensor& mean, const Tensor& scale, const Tensor& shift) {
  return {values<acc_t>(mean, map), values<acc_t>(scale, map), values<acc_t>(shift, map)};
}

void check_grad(const Tensor& grad, const Tensor& x) {
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.strides() == x.strides() && grad.scalar_type() == x.scalar_type(),
              "masked_bn: the gradient must have the map's shape, layout and dtype");
}

// out = (x - mean) * scale + shift at visible sites (then ReLU if `relu`), 0 elsewhere.
Tensor masked_bn_apply(const Tensor& x, const Tensor& mask, const Tensor& mean, const Tensor& scale,
                       const Tensor& shift, bool relu) {
  const Map map = check_map(x, mask);
  const VisibleRuns runs = visible_runs(mask, map.batch, map.sites);
  Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "masked_bn_apply", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    with_relu(relu, [&](auto on) {
      apply_kernel<decltype(on)::value, scalar_t>(x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), map, runs,
                                                  channels<acc_t>(map, mean, scale, shift));
    });
  });
  return out;
}

// Per channel: sums over the visible sites of the passed gradient and of it times (x - mean), in double.
std::tuple<Tensor, Tensor> masked_bn_grad_sums(const Tensor& grad, const Tensor& x, const Tensor& mask,
                                               const Tensor& mean, const Tensor& scale, const Tensor& shift,
                                               bool relu) {
  const Map map = check_map(x, mask);
  check_grad(grad, x);
  const VisibleRuns runs = visible_runs(mask, map.batch, map.sites);
  auto options = x.options().dtype(at::kDouble);
  Tensor sum_g = at::zeros({map.channels}, options), sum_gx = at::zeros({map.channels}, options);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "masked_bn_grad_sums", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    with_relu(relu, [&](auto on) {
      grad_sums_kernel<decltype(on)::value, scalar_t>(grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), map, runs,
                                                      channels<acc_t>(map, mean, scale, shift),
                                                      sum_g.data_ptr<double>(), sum_gx.data_ptr<double>());
    });
  });
  const auto acc = at::toOpMathType(x.scalar_type());
  return {sum_g.to(acc), sum_gx.to(acc)};
}

// grad_x = scale * passed(grad) - k1 - (x - mean) * k2 at visible sites, 0 elsewhere.
Tensor masked_bn_grad_input(const Tensor& grad, const Tensor& x, const Tensor& mask, const Tensor& mean,
                            const Tensor& scale, const Tensor& shift, bool relu, const Tensor& k1, const Tensor& k2) {
  const Map map = check_map(x, mask);
  check_grad(grad, x);
  const VisibleRuns runs = visible_runs(mask, map.batch, map.sites);
  Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "masked_bn_grad_input", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    with_relu(relu, [&](auto on) {
      grad_input_kernel<decltype(on)::value, scalar_t>(grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                                       out.data_ptr<scalar_t>(), map, runs,
                                                       channels<acc_t>(map, mean, scale, shift),
                                                       values<acc_t>(k1, map), values<acc_t>(k2, map));
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(spark_masked_bn, m) {
  m.def("stats(Tensor x, Tensor mask) -> (Tensor, Tensor, Tensor)");
  m.def("apply(Tensor x, Tensor mask, Tensor mean, Tensor scale, Tensor shift, bool relu) -> Tensor");
  m.def("grad_sums(Tensor grad, Tensor x, Tensor mask, Tensor mean, Tensor scale, Tensor shift, bool relu)"
        " -> (Tensor, Tensor)");
  m.def("grad_input(Tensor grad, Tensor x, Tensor mask, Tensor mean, Tensor scale, Tensor shift, bool relu,"
        " Tensor k1, Tensor k2) -> Tensor");
}

TORCH_LIBRARY_IMPL(spark_masked_bn, CPU, m) {
  m.impl("stats", masked_bn_stats);
  m.impl("apply", masked_bn_apply);
  m.impl("grad_sums", masked_bn_grad_sums);
  m.impl("grad_input", masked_bn_grad_input);
}
