// bench_copy.wgsl: the shader-copy bandwidth floor of `gpulanes bench`
// (src/bench/gpu.rs). Each invocation copies 16-byte words in a grid-stride
// loop, so every byte of `src` is read once and every byte of `dst` written
// once; `bytes read + written / time` is the device's copy bandwidth as a
// compute shader sees it (a buffer-to-buffer copy can be much slower on some
// drivers). The host dispatches one bind group per binding-sized chunk.

@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(256)
fn copy(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let n = arrayLength(&src);
    let stride = groups.x * 256u;
    for (var i = gid.x; i < n; i += stride) {
        dst[i] = src[i];
    }
}
