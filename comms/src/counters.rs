//! [`counters!`](crate::counters): a backend's live counters and their snapshot, declared once.

/// Declares `$live`, a struct of `AtomicU64` counters a backend bumps (injected, one per backend,
/// never global, so that many nodes share a process), and `$snapshot`, a serializable copy of them
/// at one moment, with `$live::snapshot()`. Each counter's doc comment documents both. The calling
/// crate needs `serde`.
#[macro_export]
macro_rules! counters {
    ($(#[$live_doc:meta])* $live:ident, $(#[$snap_doc:meta])* $snapshot:ident {
        $($(#[$doc:meta])* $name:ident,)*
    }) => {
        $(#[$live_doc])*
        #[derive(Debug, Default)]
        pub struct $live {
            $($(#[$doc])* pub $name: ::std::sync::atomic::AtomicU64,)*
        }

        $(#[$snap_doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, ::serde::Serialize)]
        pub struct $snapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl $live {
            /// The counters now.
            pub fn snapshot(&self) -> $snapshot {
                $snapshot { $($name: self.$name.load(::std::sync::atomic::Ordering::Relaxed),)* }
            }
        }
    };
}

/// Adds one to `counter`.
pub fn bump(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}
