//! Plugins built for `fedwasm:placement@0.2.0`: distribute requests name every
//! cluster in every list and answers come back by name; rank requests lose the
//! positions `0.3.0` added. Settings and `customize` are as today.

super::older::translate!(v0_2, settings; hooks: Select, Distribute, Rank, Customize);
super::older::named_distribute!(settings);
super::older::rank!(settings);
super::older::customize!();
