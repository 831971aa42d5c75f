//! `hello`: answers `200 text/plain` `hello from wasmesh\n` to any request, with no inference.
//!
//! It is the overhead benchmark (`cargo bench --bench host`), so it is as small as a
//! `wasi:http` handler gets: `#![no_std]`, so Rust's std runtime and the wasi-libc
//! imports it brings (stdio, environment, exit: 20 of a std build's 35 imports) are
//! not in it. Each import is a trampoline the host sets up on every instantiation.
//! Components that need std (all the others here) just use it.

#![no_std]

extern crate alloc;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

const BODY: &[u8] = b"hello from wasmesh\n";

#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// A panic traps the instance; the host answers 500 for it.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let headers = Fields::new();
        let mut digits = [0u8; 20];
        // The host accepts both headers; a refused one would only be left out.
        let _ = headers.append("content-type", b"text/plain");
        let _ = headers.append("content-length", decimal(BODY.len(), &mut digits));
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(200);
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            // A write fails only when the client went away; nothing is left to do then.
            let _ = stream.blocking_write_and_flush(BODY);
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

/// `n` in decimal ASCII, written at the end of `buffer`.
fn decimal(mut n: usize, buffer: &mut [u8; 20]) -> &[u8] {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buffer[at..];
        }
    }
}

/// The canonical ABI's allocator, which the host calls to pass lists and strings in
/// (wasi-libc provides it to components built with std).
///
/// # Safety
/// Called by the host per the component model's canonical ABI: `old` is null with
/// `old_len` 0, or a block this function returned with that length and `align`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, realloc};
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the canonical ABI passes a power-of-two `align` and, for a reallocation,
    // the pointer, size and alignment of the block it was given before.
    let ptr = unsafe {
        if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(old, Layout::from_size_align_unchecked(old_len, align), new_len)
        }
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable()
    }
    ptr
}

wasi::http::proxy::export!(Hello);
