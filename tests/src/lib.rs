//! End-to-end test harness across the Tandem programs.
//! Not yet implemented: the first end-to-end tests arrive with the updater (issue 4).
