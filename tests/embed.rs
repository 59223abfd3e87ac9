//! Embedding the engine on an app's device (lavapipe in CI): the app's
//! uncaptured-error handler stays the app's, the engine's own errors come
//! back as `Error`s, and app-owned buffers are reduced in place with their
//! usage and size checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gpulanes::wgpu;
use gpulanes::{
    DeviceArray, Dtype, Engine, EngineOptions, Error, NanPolicy, Op, Partitions, Scalar,
};

/// An app's device with its own uncaptured-error handler (counting what it
/// sees), and an engine adopted onto it.
fn app_engine() -> (Engine, Arc<AtomicUsize>) {
    let (_instance, adapter) = gpulanes::adapter::open().expect("an adapter");
    let info = adapter.get_info();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("app device"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .expect("a device");
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    device.on_uncaptured_error(Arc::new(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let engine = Engine::from_device(device, queue, &info, EngineOptions::default()).unwrap();
    (engine, seen)
}

/// An app buffer holding `bytes`, with `usage` (plus COPY_DST to fill it).
fn app_buffer(engine: &Engine, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    let buffer = engine.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("app buffer"),
        size: (bytes.len() as u64).next_multiple_of(16).max(16),
        usage: usage | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    engine.queue().write_buffer(&buffer, 0, bytes);
    buffer
}

fn invalid_input(e: &Error, needle: &str) -> bool {
    matches!(e, Error::InvalidInput(m) if m.contains(needle))
}

#[test]
fn from_device_leaves_the_apps_error_handler_alone() {
    let (engine, seen) = app_engine();
    assert_eq!(engine.sum(&[1.0, 2.0, 3.0]).unwrap(), 6.0);
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the engine raised no error");
    // An error the app makes outside any scope reaches the app's handler:
    // the engine did not replace it. (MAP_READ goes only with COPY_DST.)
    let _ = engine.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("an invalid app buffer"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the app's handler saw its error"
    );
    // An error in the engine's own work comes back as an `Error`, and the
    // app's handler never sees it: a destroyed app buffer.
    let buffer = app_buffer(
        &engine,
        bytemuck::cast_slice(&[1.0f32; 8]),
        wgpu::BufferUsages::STORAGE,
    );
    let array = DeviceArray::from_buffer(&engine, buffer.clone(), Dtype::F32, 8).unwrap();
    buffer.destroy();
    let e = engine
        .reduce_device(&array, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
        .unwrap_err();
    assert!(matches!(e, Error::Validation { .. }), "{e:?}");
    assert!(
        std::error::Error::source(&e).is_some(),
        "wgpu's error is the source"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // The engine goes on.
    assert!(!engine.is_device_lost());
    assert_eq!(engine.max(&[1.0, 5.0]).unwrap(), Some(5.0));
}

#[test]
fn app_buffers_reduce_in_place_like_uploads() {
    let (engine, seen) = app_engine();
    let floats: Vec<f32> = (0..10_001).map(|i| (i % 97) as f32 * 0.25 - 7.0).collect();
    let ints: Vec<i64> = (0..5_003).map(|i| (i * 7919) % 100_003 - 50_000).collect();
    let parts = Partitions::EqualSize(1000);
    let f = DeviceArray::from_buffer(
        &engine,
        app_buffer(
            &engine,
            bytemuck::cast_slice(&floats),
            wgpu::BufferUsages::STORAGE,
        ),
        Dtype::F32,
        floats.len() as u64,
    )
    .unwrap();
    let i = DeviceArray::from_buffer(
        &engine,
        app_buffer(
            &engine,
            bytemuck::cast_slice(&ints),
            wgpu::BufferUsages::STORAGE,
        ),
        Dtype::I64,
        ints.len() as u64,
    )
    .unwrap();
    assert_eq!(
        (f.len(), f.dtype(), i.dtype()),
        (10_001, Dtype::F32, Dtype::I64)
    );
    for op in [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count] {
        for partitions in [&Partitions::Whole, &parts] {
            let nan = NanPolicy::Propagate;
            let got = engine.reduce_device_typed(&f, op, partitions, nan).unwrap();
            let want = engine.reduce_slice(&floats, op, partitions, nan).unwrap();
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "f32 {op}");
            let got = engine.reduce_device_typed(&i, op, partitions, nan).unwrap();
            let want = engine.reduce_slice(&ints, op, partitions, nan).unwrap();
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "i64 {op}");
        }
    }
    let total = engine
        .reduce_device_typed(&i, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
        .unwrap();
    assert_eq!(total.values, vec![Some(Scalar::I64(ints.iter().sum()))]);
    // A prefix of a buffer is an array of its own.
    let prefix = DeviceArray::from_buffer(
        &engine,
        app_buffer(
            &engine,
            bytemuck::cast_slice(&floats),
            wgpu::BufferUsages::STORAGE,
        ),
        Dtype::F32,
        10,
    )
    .unwrap();
    let r = engine
        .reduce_device(&prefix, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
        .unwrap();
    assert_eq!(r.values, vec![Some(floats[..10].iter().sum())]);
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[test]
fn app_buffers_are_checked() {
    let (engine, seen) = app_engine();
    let data = [1.0f32; 64];
    let bytes: &[u8] = bytemuck::cast_slice(&data);
    let storage = wgpu::BufferUsages::STORAGE;

    let no_storage = app_buffer(&engine, bytes, wgpu::BufferUsages::COPY_SRC);
    let e = DeviceArray::from_buffer(&engine, no_storage, Dtype::F32, 64).unwrap_err();
    assert!(invalid_input(&e, "STORAGE"), "{e:?}");

    // 64 float64 values need 512 bytes; the buffer has 256.
    let e = DeviceArray::from_buffer(&engine, app_buffer(&engine, bytes, storage), Dtype::F64, 64)
        .unwrap_err();
    assert!(invalid_input(&e, "at least 512 bytes"), "{e:?}");
    // Sizes are rounded up to 16 bytes: 63 float32 values in 256 bytes fit.
    DeviceArray::from_buffer(&engine, app_buffer(&engine, bytes, storage), Dtype::F32, 63).unwrap();

    let e = DeviceArray::from_buffer(
        &engine,
        app_buffer(&engine, bytes, storage),
        Dtype::I64,
        u64::MAX,
    )
    .unwrap_err();
    assert!(invalid_input(&e, "largest"), "{e:?}");

    let mapped = engine.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("mapped app buffer"),
        size: 256,
        usage: storage,
        mapped_at_creation: true,
    });
    // A mapped buffer fails the reduction that uses it, not the engine.
    let array = DeviceArray::from_buffer(&engine, mapped.clone(), Dtype::F32, 64).unwrap();
    let e = engine
        .reduce_device(&array, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
        .unwrap_err();
    assert!(matches!(e, Error::Validation { .. }), "{e:?}");
    mapped.unmap();
    let ok = DeviceArray::from_buffer(&engine, mapped, Dtype::U32, 64).unwrap();
    let r = engine
        .reduce_device_typed(&ok, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
        .unwrap();
    assert_eq!(r.values, vec![Some(Scalar::I64(0))], "zeroed at creation");

    // An array of one engine is refused by another.
    let (other, _) = app_engine();
    let theirs =
        DeviceArray::from_buffer(&other, app_buffer(&other, bytes, storage), Dtype::F32, 64)
            .unwrap();
    let e = engine
        .reduce_device(&theirs, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
        .unwrap_err();
    assert!(invalid_input(&e, "another engine"), "{e:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[test]
fn the_reexported_crates_are_the_ones_the_api_takes() {
    let engine = Engine::new().unwrap();
    let a = gpulanes::ndarray::Array1::from(vec![1.0f32, 2.0, 4.0]);
    let r = engine
        .reduce_view(a.view(), Op::Sum, NanPolicy::Propagate)
        .unwrap();
    assert_eq!(r.values, vec![Some(7.0)]);
    let _: &gpulanes::wgpu::Device = engine.device();
}

#[test]
fn app_buffers_serve_as_group_keys_where_their_usage_allows() {
    let (engine, seen) = app_engine();
    // Keys far apart: sparse, so they are read back once (COPY_SRC).
    let keys: Vec<i64> = vec![0, 1 << 40, 0, -(1 << 40)];
    let values: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0];
    let values = DeviceArray::from_buffer(
        &engine,
        app_buffer(
            &engine,
            bytemuck::cast_slice(&values),
            wgpu::BufferUsages::STORAGE,
        ),
        Dtype::F32,
        4,
    )
    .unwrap();
    let storage_only = DeviceArray::from_buffer(
        &engine,
        app_buffer(
            &engine,
            bytemuck::cast_slice(&keys),
            wgpu::BufferUsages::STORAGE,
        ),
        Dtype::I64,
        4,
    )
    .unwrap();
    let e = engine
        .reduce_by_key_device(&storage_only, &values, &[Op::Sum], NanPolicy::Propagate)
        .unwrap_err();
    assert!(invalid_input(&e, "COPY_SRC"), "{e:?}");
    let readable = DeviceArray::from_buffer(
        &engine,
        app_buffer(
            &engine,
            bytemuck::cast_slice(&keys),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        ),
        Dtype::I64,
        4,
    )
    .unwrap();
    let g = engine
        .reduce_by_key_device(&readable, &values, &[Op::Sum], NanPolicy::Propagate)
        .unwrap();
    assert_eq!(g.keys, vec![-(1 << 40), 0, 1 << 40]);
    assert_eq!(
        g.reductions[0].values,
        vec![
            Some(Scalar::F32(4.0)),
            Some(Scalar::F32(4.0)),
            Some(Scalar::F32(2.0))
        ]
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}
