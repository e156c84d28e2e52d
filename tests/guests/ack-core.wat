;; A WASI preview1 reactor core module that exports the weir:handler world by hand and acks
;; every message: what a Go handler looks like to `weir deploy`, without needing Go. Used by
;; the runtime's tests of turning core modules into components.
(module
  (import "weir:handler/host@0.1.0" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  ;; Arguments go between 4096 and the end of the page, starting over when they would not
  ;; fit: one call's arguments never outlive the call.
  (global $next (mut i32) (i32.const 4096))
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
    (param $size i32) (result i32)
    (local $at i32)
    (local.set $at
      (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (if (i32.gt_u (i32.add (local.get $at) (local.get $size)) (i32.const 65536))
      (then (local.set $at (i32.const 4096))))
    (if (i32.gt_u (i32.add (local.get $at) (local.get $size)) (i32.const 65536))
      (then unreachable))
    (global.set $next (i32.add (local.get $at) (local.get $size)))
    (local.get $at))
  (func (export "_initialize"))
  ;; init(config) -> result<_, string>: a pointer to (tag, ptr, len); tag 0 is ok.
  (func (export "init") (param i32 i32) (result i32) (i32.const 2048))
  ;; handle(msg) -> outcome: the message's twelve flat values (subject, payload, headers and
  ;; stream as pointer and length, stream-seq, partition, delivery-attempt, published-at); a
  ;; pointer to the variant comes back, all zeros being `ack`.
  (func (export "handle")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i64 i32 i32 i64) (result i32)
    (i32.const 2048)))
