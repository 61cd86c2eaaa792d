//! Plugins built for `fedwasm:placement@0.1.0`: requests are translated from the
//! current contract (their settings dropped: `0.1.0` has none) and answers back.
//! `0.1.0` has no `customize` hook, so such a plugin never declares it.

super::older::translate!(v0_1; hooks: Select, Distribute, Rank);
super::older::named_distribute!();
super::older::rank!();
