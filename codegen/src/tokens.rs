//! The module `edgent_plan!` emits: the plan's constants, the `(exit, partition)` cost
//! tables, the families of routes (partition and encoding) with each family's lower
//! envelope as `static` data, and the `decide` entry point
//! (DESIGN.md §6). The tokens name `::runtime::plan`, which the invoking crate depends on.

use std::path::Path;

use proc_macro2::{Literal, TokenStream};
use quote::{ToTokens, quote};

use crate::envelope::lower_envelope;
use crate::plan::{
    Plan, PlanExit, PlanFamily, PlanLayer, PlanParams, PlanRoute, VALUES, parse_encoding,
};

/// The module `pub mod plan { … }` for `plan`, read from `plan_path` (absolute, so that the
/// emitted `include_bytes!` finds it and edits to the file rebuild the invoking crate). The
/// weights, the file `plan.weights_file` beside the plan, are embedded as `plan::WEIGHTS`.
///
/// Floats are emitted so that they parse back to the same bits. Never panics, even on a plan
/// that [`Plan::validate`] would refuse (non-finite floats become `f64::NAN` and the like).
pub fn expand(plan: &Plan, plan_path: &Path) -> TokenStream {
    let rt = quote!(::runtime::plan);
    let plan_file = plan_path.to_string_lossy();
    let weights_path = plan_path.with_file_name(&plan.weights_file);
    let weights_path = weights_path.to_string_lossy();
    let digest = &plan.digest;
    let weights_digest = &plan.weights_digest;
    let weights_file = &plan.weights_file;
    let dataset = &plan.dataset;
    let latency_source = &plan.latency_source;
    let device_slowdown = f64_literal(plan.device_slowdown);
    let device_threads = usize_literal(plan.device_threads);
    let edge_threads = usize_literal(plan.edge_threads);
    let input_len = usize_literal(plan.input.len());
    let input = plan.input.iter().map(|&d| usize_literal(d));
    let classes = usize_literal(plan.classes);
    let mean = plan.normalization_mean.iter().map(|&v| f32_literal(v));
    let std = plan.normalization_std.iter().map(|&v| f32_literal(v));
    let exits = usize_literal(plan.exits.len());
    let chain_len = plan.exits.iter().map(|e| usize_literal(e.layers.len()));
    let accuracy = plan.exits.iter().map(|e| f64_literal(e.accuracy));
    let layer_names = plan.exits.iter().map(|e| {
        let names = e.layers.iter().map(|l| &l.name);
        quote!(&[#(#names),*])
    });
    let tables = plan.exits.iter().map(|e| exit_table(&rt, e));
    let by_accuracy = by_accuracy(&plan.exits).into_iter().map(usize_literal);
    let families: Vec<(usize, PlanFamily)> = plan
        .exits
        .iter()
        .flat_map(|e| e.families().into_iter().map(move |f| (e.exit, f)))
        .collect();
    let family_count = usize_literal(families.len());
    let family_order = families_by_accuracy(&families)
        .into_iter()
        .map(usize_literal);
    let family_tables = families.iter().map(|(exit, f)| family_table(&rt, *exit, f));
    let device_engine = &plan.device_engine;
    let edge_engine = &plan.edge_engine;
    let engine = engine(plan);

    let module_doc = format!(
        " The Edgent plan compiled in by `edgent_plan!`: {} exits, data set `{dataset}`, \
         plan digest `{digest}`.",
        plan.exits.len()
    );
    quote! {
        #[doc = #module_doc]
        pub mod plan {
            /// The plan file itself, so that editing it rebuilds this crate.
            const _PLAN_FILE: &[u8] = ::core::include_bytes!(#plan_file);
            /// Digest of the plan: device and edge refuse to talk across different plans.
            pub const DIGEST: &str = #digest;
            /// Digest of the weights the plan was made for.
            pub const WEIGHTS_DIGEST: &str = #weights_digest;
            /// Weights file, relative to the plan file.
            pub const WEIGHTS_FILE: &str = #weights_file;
            /// The weights (safetensors) the plan was made for, embedded from beside the plan.
            pub const WEIGHTS: &[u8] = ::core::include_bytes!(#weights_path);
            /// Data set the model was trained on.
            pub const DATASET: &str = #dataset;
            /// Where the latency models came from.
            pub const LATENCY_SOURCE: &str = #latency_source;
            /// Emulated device slowdown the device latency models describe.
            pub const DEVICE_SLOWDOWN: f64 = #device_slowdown;
            /// CPU threads the device's layers run on (0: one per core).
            pub const DEVICE_THREADS: usize = #device_threads;
            /// CPU threads the edge's layers run on (0: one per core).
            pub const EDGE_THREADS: usize = #edge_threads;
            /// The engine the device's latency models were profiled on (`generated`, `burn`).
            pub const DEVICE_ENGINE: &str = #device_engine;
            /// The engine the edge's latency models were profiled on.
            pub const EDGE_ENGINE: &str = #edge_engine;
            /// Input shape per sample `[C, H, W]` (`u8` pixels on the device).
            pub const INPUT: [usize; #input_len] = [#(#input),*];
            /// Number of classes.
            pub const CLASSES: usize = #classes;
            /// Per-channel mean of the normalisation `(x / 255 − mean) / std`.
            pub const NORMALIZATION_MEAN: &[f32] = &[#(#mean),*];
            /// Per-channel standard deviation of the normalisation.
            pub const NORMALIZATION_STD: &[f32] = &[#(#std),*];
            /// Number of exits.
            pub const EXITS: usize = #exits;
            /// `CHAIN_LEN[i]`: number of layers `N` of exit `i + 1`.
            pub static CHAIN_LEN: [usize; EXITS] = [#(#chain_len),*];
            /// `ACCURACY[i]`: test accuracy of exit `i + 1`.
            pub static ACCURACY: [f64; EXITS] = [#(#accuracy),*];
            /// `LAYER_NAMES[i]`: the layers of exit `i + 1`, in order.
            pub static LAYER_NAMES: [&[&str]; EXITS] = [#(#layer_names),*];
            /// `TABLES[i]`: costs of the paper's routes (raw image, `f32` activations) of every
            /// partition of exit `i + 1`, for the baselines and the local fallback.
            pub static TABLES: [#rt::ExitTable; EXITS] = [#(#tables),*];
            /// Indices into `TABLES`, most accurate exit first (the deeper one on ties).
            pub static BY_ACCURACY: [usize; EXITS] = [#(#by_accuracy),*];
            /// Number of families of routes.
            pub const FAMILY_COUNT: usize = #family_count;
            /// Every family of routes (partition and encoding) of every exit, with the lower
            /// envelope of its remote routes.
            pub static FAMILIES: [#rt::FamilyTable; FAMILY_COUNT] = [#(#family_tables),*];
            /// Indices into `FAMILIES` in Algorithm 1's order (most accurate first).
            pub static FAMILIES_BY_ACCURACY: [usize; FAMILY_COUNT] = [#(#family_order),*];
            /// The decision for the current bandwidth (bits/s), round trip (ms) and deadline (ms).
            #[inline]
            pub fn decide(bandwidth_bps: f64, rtt_ms: f64, deadline_ms: f64) -> #rt::Decision {
                #rt::decide_tables(&FAMILIES, &FAMILIES_BY_ACCURACY, #rt::Link { bandwidth_bps, rtt_ms }, deadline_ms)
            }
            #engine
        }
    }
}

/// `pub mod engine { … }`: the generated engine (DESIGN.md §10). `layer` runs any layer of
/// any exit chain as a call of its kernel with every shape a constant; `SHAPES` lets the
/// binary check at start-up that the network it packs is the one the plan describes.
fn engine(plan: &Plan) -> TokenStream {
    let eng = quote!(::runtime::engine);
    let mut arms = Vec::new();
    for exit in &plan.exits {
        for (index, layer) in exit.layers.iter().enumerate() {
            let (e, i) = (usize_literal(exit.exit), usize_literal(index));
            let call = layer_call(&eng, layer, &e, &i);
            arms.push(quote!((#e, #i) => #call,));
        }
    }
    let shapes = plan.exits.iter().map(|exit| {
        let layers = exit.layers.iter().map(|l| {
            let input = l.input.iter().map(|&d| usize_literal(d));
            let output = l.output.iter().map(|&d| usize_literal(d));
            quote!((&[#(#input),*], &[#(#output),*]))
        });
        quote!(&[#(#layers),*])
    });
    quote! {
        /// The generated engine: every layer of every exit chain as a call of its kernel with
        /// its shapes as constants. Run it through `runtime::engine::PackedNetwork::run_with`
        /// (`with_layer_fn(engine::layer, …)`), which packs the weights once, holds the
        /// arena and fuses a ReLU into the layer before it.
        pub mod engine {
            /// Runs layer `index` of exit `exit` in `arena` (`relu`: apply the ReLU that
            /// follows too).
            pub fn layer(
                net: &#eng::PackedNetwork,
                arena: &mut #eng::Arena,
                exit: usize,
                index: usize,
                relu: bool,
            ) {
                let isa = net.isa();
                let _ = (isa, relu);
                match (exit, index) {
                    #(#arms)*
                    _ => ::core::unreachable!(
                        "exit {} has no layer {}: the network was checked against the plan at start-up",
                        exit, index
                    ),
                }
            }

            /// `SHAPES[i][j]`: input and output shape of layer `j` of exit `i + 1`.
            pub static SHAPES: [&[(&[usize], &[usize])]; super::EXITS] = [#(#shapes),*];
        }
    }
}

/// The kernel call of one layer (a `compile_error!` for a layer the kernels cannot run).
fn layer_call(eng: &TokenStream, layer: &PlanLayer, e: &Literal, i: &Literal) -> TokenStream {
    let map = match *layer.input.as_slice() {
        [c, h, w] => Some((c, h, w)),
        _ => None,
    };
    let unsupported = |why: &str| {
        let message = format!("layer {}: {why}: run `cargo xtask generate`", layer.name);
        quote!(::core::compile_error!(#message))
    };
    match (&layer.params, map) {
        (PlanParams::Lrn { beta, .. }, _) if *beta != 0.75 => {
            unsupported("the LRN kernel computes β = 0.75 only")
        }
        (
            PlanParams::Conv {
                in_channels,
                out_channels,
                kernel,
                padding,
            },
            Some((_, h, w)),
        ) => {
            let [ic, oc, h, w, k, pad] =
                [*in_channels, *out_channels, h, w, *kernel, *padding].map(usize_literal);
            quote!(net.conv(arena, #e, #i, #eng::kernels::ConvConst::<#ic, #oc, #h, #w, #k, #pad>, relu))
        }
        (
            PlanParams::Fc {
                in_features,
                out_features,
            },
            _,
        ) => {
            let (inputs, outputs) = (usize_literal(*in_features), usize_literal(*out_features));
            quote!(net.fc(arena, #e, #i, #eng::kernels::Fc { inputs: #inputs, outputs: #outputs }, relu))
        }
        (PlanParams::MaxPool { kernel, stride }, Some((c, h, w))) => {
            let [c, h, w, k, stride] = [c, h, w, *kernel, *stride].map(usize_literal);
            quote!(arena.pool(isa, #eng::kernels::Pool { c: #c, h: #h, w: #w, k: #k, stride: #stride }))
        }
        (PlanParams::Lrn { size, alpha, k, .. }, Some((c, h, w))) => {
            let [c, hw, size] = [c, h * w, *size].map(usize_literal);
            let (alpha, k) = (f32_literal(*alpha), f32_literal(*k));
            quote!(arena.lrn(isa, #eng::kernels::Lrn { c: #c, hw: #hw, size: #size, alpha: #alpha, k: #k }))
        }
        (PlanParams::Dropout { .. }, _) => quote!({}),
        (PlanParams::None, _) => {
            let len = usize_literal(layer.input.iter().product());
            quote!(arena.relu(isa, #len))
        }
        _ => unsupported("a convolution, pooling or LRN needs a [C, H, W] input"),
    }
}

/// One `ExitTable` literal: the pairs `p = 0..=N` and the envelope of the lines of `p < N`.
fn pair_cost(
    rt: &TokenStream,
    device_ms: f64,
    edge_ms: f64,
    edge_ms_per_image: f64,
    bytes: u64,
) -> TokenStream {
    let device_ms = f64_literal(device_ms);
    let edge_ms = f64_literal(edge_ms);
    let per_image = f64_literal(edge_ms_per_image);
    let bytes = Literal::u64_unsuffixed(bytes);
    quote!(#rt::PairCost {
        device_ms: #device_ms,
        edge_ms: #edge_ms,
        bytes: #bytes,
        edge_ms_per_image: #per_image,
    })
}

fn exit_table(rt: &TokenStream, exit: &PlanExit) -> TokenStream {
    let number = usize_literal(exit.exit);
    let accuracy = f64_literal(exit.accuracy);
    let pairs = exit
        .partitions
        .iter()
        .map(|p| pair_cost(rt, p.device_ms, p.edge_ms, p.edge_ms_per_image, p.bytes));
    quote! {
        #rt::ExitTable {
            exit: #number,
            accuracy: #accuracy,
            pairs: &[#(#pairs),*],
        }
    }
}

/// `::runtime::wire::encoding::Values::…` for a kind of values by name.
fn values_tokens(values: &str) -> TokenStream {
    if !VALUES.iter().any(|(v, _)| *v == values) {
        let message = format!("`{values}` is not a kind of values: run `cargo xtask generate`");
        return quote!(::core::compile_error!(#message));
    }
    // The variant is the name with its first letter in capitals: `q8c` is `Values::Q8c`.
    let mut name = values.to_string();
    name[..1].make_ascii_uppercase();
    let variant = proc_macro2::Ident::new(&name, proc_macro2::Span::call_site());
    quote!(::runtime::wire::encoding::Values::#variant)
}

fn route_tokens(rt: &TokenStream, route: &PlanRoute) -> TokenStream {
    let partition = usize_literal(route.partition);
    let encoding = match route.encoding.as_deref().map(parse_encoding) {
        None => quote!(::core::option::Option::None),
        Some(Some((values, zstd))) => {
            let values = values_tokens(values);
            quote!(::core::option::Option::Some(::runtime::wire::encoding::Encoding::new(#values, #zstd)))
        }
        Some(None) => {
            let message = format!(
                "`{}` is not an encoding: run `cargo xtask generate`",
                route.encoding.as_deref().unwrap_or_default()
            );
            quote!(::core::compile_error!(#message))
        }
    };
    let cost = pair_cost(
        rt,
        route.device_ms,
        route.edge_ms,
        route.edge_ms_per_image,
        route.bytes,
    );
    quote!(#rt::Route { partition: #partition, encoding: #encoding, cost: #cost })
}

fn family_table(rt: &TokenStream, exit: usize, family: &PlanFamily) -> TokenStream {
    let number = usize_literal(exit);
    let accuracy = f64_literal(family.accuracy);
    let lossy = match &family.lossy {
        None => quote!(::core::option::Option::None),
        Some(values) => {
            let values = values_tokens(values);
            quote!(::core::option::Option::Some(#values))
        }
    };
    let (remote, local): (Vec<&PlanRoute>, Vec<&PlanRoute>) =
        family.routes.iter().partition(|r| r.encoding.is_some());
    let segments = family_envelope(family).into_iter().map(|(from_x, i)| {
        let from_x = f64_literal(from_x);
        let route = usize_literal(i);
        quote!(#rt::Segment { from_x: #from_x, route: #route })
    });
    let remote = remote.into_iter().map(|r| route_tokens(rt, r));
    let local = match local.first() {
        Some(r) => {
            let r = route_tokens(rt, r);
            quote!(::core::option::Option::Some(#r))
        }
        None => quote!(::core::option::Option::None),
    };
    quote! {
        #rt::FamilyTable {
            exit: #number,
            lossy: #lossy,
            accuracy: #accuracy,
            remote: &[#(#remote),*],
            envelope: &[#(#segments),*],
            local: #local,
        }
    }
}

/// The lower envelope of a family's remote routes (those with an encoding, in order) over
/// x = 1/B: the lines `device_ms + edge_ms + bytes·8000·x` (ms, x in seconds per bit).
pub fn family_envelope(family: &PlanFamily) -> Vec<(f64, usize)> {
    let lines: Vec<(f64, f64)> = family
        .routes
        .iter()
        .filter(|r| r.encoding.is_some())
        .map(|r| (r.device_ms + r.edge_ms, r.bytes as f64 * 8000.0))
        .collect();
    lower_envelope(&lines)
}

/// The lower envelope of an exit's exact family (the paper's partitions when nothing else
/// was measured).
pub fn envelope(exit: &PlanExit) -> Vec<(f64, usize)> {
    exit.families()
        .first()
        .map(family_envelope)
        .unwrap_or_default()
}

/// Indices of `families` (`(exit, family)`) in Algorithm 1's order: most accurate first,
/// the deeper exit first on ties, then the exact family, then by kind of values (the
/// order of `runtime::plan::family_order`).
pub fn families_by_accuracy(families: &[(usize, PlanFamily)]) -> Vec<usize> {
    let rank = |lossy: &Option<String>| match lossy {
        None => 0,
        Some(values) => 1 + VALUES.iter().position(|(v, _)| v == values).unwrap_or(9),
    };
    let mut order: Vec<usize> = (0..families.len()).collect();
    order.sort_by(|&a, &b| {
        let ((ea, fa), (eb, fb)) = (&families[a], &families[b]);
        fb.accuracy
            .total_cmp(&fa.accuracy)
            .then(eb.cmp(ea))
            .then(rank(&fa.lossy).cmp(&rank(&fb.lossy)))
    });
    order
}

/// Indices of `exits`, most accurate first, the deeper exit first on ties (the order of
/// `runtime::plan::decide`).
pub fn by_accuracy(exits: &[PlanExit]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..exits.len()).collect();
    order.sort_by(|&a, &b| {
        exits[b]
            .accuracy
            .total_cmp(&exits[a].accuracy)
            .then(exits[b].exit.cmp(&exits[a].exit))
    });
    order
}

fn usize_literal(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

/// An `f64` literal that parses back to the same bits: the shortest round-trip digits, as
/// `{:?}` writes them (`0.0`, `0.1`, `1.5e-7`), with an `f64` suffix.
fn f64_literal(v: f64) -> TokenStream {
    if !v.is_finite() {
        return non_finite(v, quote!(f64));
    }
    let literal = format!("{:?}f64", v.abs())
        .parse::<Literal>()
        .unwrap_or_else(|_| Literal::f64_suffixed(v.abs()));
    negate_if(v.is_sign_negative(), literal)
}

/// The `f32` nearest to `v`, as a literal (see [`f64_literal`]).
fn f32_literal(v: f64) -> TokenStream {
    let v = v as f32;
    if !v.is_finite() {
        return non_finite(f64::from(v), quote!(f32));
    }
    let literal = format!("{:?}f32", v.abs())
        .parse::<Literal>()
        .unwrap_or_else(|_| Literal::f32_suffixed(v.abs()));
    negate_if(v.is_sign_negative(), literal)
}

/// A negative number as `-` and a literal: literal tokens are not negative.
fn negate_if(negative: bool, literal: Literal) -> TokenStream {
    if negative {
        quote!(-#literal)
    } else {
        literal.into_token_stream()
    }
}

fn non_finite(v: f64, ty: TokenStream) -> TokenStream {
    if v.is_nan() {
        quote!(#ty::NAN)
    } else if v > 0.0 {
        quote!(#ty::INFINITY)
    } else {
        quote!(#ty::NEG_INFINITY)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::{PLAN_VERSION, PlanEncoding, PlanLayer, PlanPartition};
    use proc_macro2::TokenTree;

    /// A sealed plan for `[1, 4, 4]` inputs and 3 classes with `exits` exits; exit `i` has
    /// `i + 1` conv/relu pairs, then an fc. Awkward floats on purpose.
    pub(crate) fn sample_plan(exits: usize) -> Plan {
        let exits = (1..=exits)
            .map(|e| {
                let mut layers = Vec::new();
                for k in 1..=e {
                    for kind in ["conv", "relu"] {
                        let ic = if layers.is_empty() { 1 } else { 2 };
                        layers.push(PlanLayer {
                            name: format!("{kind}{k}"),
                            kind: kind.into(),
                            input: vec![ic, 4, 4],
                            output: vec![2, 4, 4],
                            params: if kind == "conv" {
                                PlanParams::Conv {
                                    in_channels: ic,
                                    out_channels: 2,
                                    kernel: 3,
                                    padding: 1,
                                }
                            } else {
                                PlanParams::None
                            },
                            device_ms: 0.1 * (k as f64) + 0.2,
                            edge_ms: 1.0 / (3.0 * k as f64),
                        });
                    }
                }
                layers.push(PlanLayer {
                    name: format!("exit{e}.fc"),
                    kind: "fc".into(),
                    input: vec![2, 4, 4],
                    output: vec![3],
                    params: PlanParams::Fc {
                        in_features: 32,
                        out_features: 3,
                    },
                    device_ms: 0.7,
                    edge_ms: 0.01,
                });
                let n = layers.len();
                let partitions = (0..=n)
                    .map(|p| PlanPartition {
                        device_ms: layers[..p].iter().map(|l| l.device_ms).sum(),
                        edge_ms: layers[p..].iter().map(|l| l.edge_ms).sum(),
                        edge_ms_per_image: layers[p..].iter().map(|l| 0.4 * l.edge_ms).sum(),
                        bytes: match p {
                            0 => 16,
                            p if p == n => 0,
                            p => 4 * layers[p].input.iter().product::<usize>() as u64,
                        },
                        encodings: sample_encodings(p, n, 0.5 + 0.1 * e as f64 / 3.0),
                    })
                    .collect();
                PlanExit {
                    exit: e,
                    accuracy: 0.5 + 0.1 * e as f64 / 3.0,
                    layers,
                    partitions,
                }
            })
            .collect();
        Plan {
            version: PLAN_VERSION,
            digest: String::new(),
            dataset: "cifar10".into(),
            input: vec![1, 4, 4],
            classes: 3,
            normalization_mean: vec![0.1],
            normalization_std: vec![0.3],
            weights_file: "weights.safetensors".into(),
            weights_digest: "abc123".into(),
            latency_source: "paper".into(),
            device_slowdown: 7.5,
            device_threads: 1,
            edge_threads: 0,
            device_engine: "generated".into(),
            edge_engine: "burn".into(),
            exits,
        }
        .seal()
    }

    /// A valid two-exit plan.
    /// The encodings of the sample plans: the image raw and compressed at 0; `f32` and
    /// `q8+zstd` (an eighth of the bytes, a point less accurate at the first split) after.
    fn sample_encodings(p: usize, n: usize, accuracy: f64) -> Vec<PlanEncoding> {
        let encoding = |name: &str, bytes: u64, encode_ms: f64, accuracy: f64| PlanEncoding {
            encoding: name.into(),
            bytes_median: bytes,
            bytes_p95: bytes + bytes / 10,
            encode_ms,
            decode_ms: encode_ms / 2.0,
            accuracy,
        };
        match p {
            0 => vec![
                encoding("u8", 16, 0.0, accuracy),
                encoding("u8+zstd", 9, 0.05, accuracy),
            ],
            p if p == n => Vec::new(),
            p => vec![
                encoding("f32", 4096, 0.01, accuracy),
                encoding("q8+zstd", 512, 0.2, accuracy - 0.01 / p as f64),
            ],
        }
    }

    pub(crate) fn tiny_plan() -> Plan {
        sample_plan(2)
    }

    /// Every `field: literal` (or `field: -literal`) in the tokens, in order, for the named
    /// fields, as the literal's text.
    fn field_literals(tokens: TokenStream, fields: &[&str], out: &mut Vec<(String, String)>) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, tree) in trees.iter().enumerate() {
            match tree {
                TokenTree::Group(g) => field_literals(g.stream(), fields, out),
                TokenTree::Ident(ident) if fields.contains(&ident.to_string().as_str()) => {
                    let Some(TokenTree::Punct(colon)) = trees.get(i + 1) else {
                        continue;
                    };
                    if colon.as_char() != ':' {
                        continue;
                    }
                    match (trees.get(i + 2), trees.get(i + 3)) {
                        (Some(TokenTree::Literal(lit)), _) => {
                            out.push((ident.to_string(), lit.to_string()))
                        }
                        (Some(TokenTree::Punct(minus)), Some(TokenTree::Literal(lit)))
                            if minus.as_char() == '-' =>
                        {
                            out.push((ident.to_string(), format!("-{lit}")))
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }

    fn parse_f64(text: &str) -> f64 {
        let (sign, text) = match text.strip_prefix('-') {
            Some(rest) => (-1.0, rest),
            None => (1.0, text),
        };
        let lit: syn::LitFloat = syn::parse_str(text).unwrap();
        assert_eq!(lit.suffix(), "f64");
        sign * lit.base10_parse::<f64>().unwrap()
    }

    fn expand_sample(exits: usize) -> (Plan, TokenStream) {
        let plan = sample_plan(exits);
        assert!(plan.validate().is_empty(), "{:?}", plan.validate());
        let tokens = expand(&plan, Path::new("/project/generated/plan.json"));
        (plan, tokens)
    }

    #[test]
    fn the_sample_plans_are_valid() {
        for exits in 1..=5 {
            assert_eq!(sample_plan(exits).validate(), Vec::<String>::new());
        }
    }

    #[test]
    fn the_expansion_is_a_documented_module() {
        let (plan, tokens) = expand_sample(5);
        let file: syn::File = syn::parse2(tokens).expect("the expansion parses");
        let [syn::Item::Mod(module)] = &file.items[..] else {
            panic!("one module expected: {}", file.to_token_stream());
        };
        assert_eq!(module.ident, "plan");
        assert!(module.attrs.iter().any(|a| a.path().is_ident("doc")));
        let items = &module.content.as_ref().expect("an inline module").1;
        let mut names = Vec::new();
        for item in items {
            let (name, attrs) = match item {
                syn::Item::Const(c) => (c.ident.to_string(), &c.attrs),
                syn::Item::Static(s) => (s.ident.to_string(), &s.attrs),
                syn::Item::Fn(f) => (f.sig.ident.to_string(), &f.attrs),
                syn::Item::Mod(m) => (m.ident.to_string(), &m.attrs),
                other => panic!("unexpected item {}", other.to_token_stream()),
            };
            assert!(
                attrs.iter().any(|a| a.path().is_ident("doc")),
                "{name} has no doc"
            );
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "_PLAN_FILE",
                "DIGEST",
                "WEIGHTS_DIGEST",
                "WEIGHTS_FILE",
                "WEIGHTS",
                "DATASET",
                "LATENCY_SOURCE",
                "DEVICE_SLOWDOWN",
                "DEVICE_THREADS",
                "EDGE_THREADS",
                "DEVICE_ENGINE",
                "EDGE_ENGINE",
                "INPUT",
                "CLASSES",
                "NORMALIZATION_MEAN",
                "NORMALIZATION_STD",
                "EXITS",
                "CHAIN_LEN",
                "ACCURACY",
                "LAYER_NAMES",
                "TABLES",
                "BY_ACCURACY",
                "FAMILY_COUNT",
                "FAMILIES",
                "FAMILIES_BY_ACCURACY",
                "decide",
                "engine"
            ]
        );
        // Five table entries.
        let tables = items
            .iter()
            .find_map(|i| match i {
                syn::Item::Static(s) if s.ident == "TABLES" => Some(&s.expr),
                _ => None,
            })
            .unwrap();
        let syn::Expr::Array(array) = &**tables else {
            panic!("TABLES is not an array literal");
        };
        assert_eq!(array.elems.len(), 5);
        let text = module.to_token_stream().to_string();
        // The engine calls every layer's kernel with its shapes as constants.
        assert!(
            text.contains("(5 , 2) => net . conv (arena , 5 , 2 , :: runtime :: engine :: kernels :: ConvConst :: < 2 , 2 , 4 , 4 , 3 , 1 > , relu)"),
            "{text}"
        );
        assert!(
            text.contains("(1 , 2) => net . fc (arena , 1 , 2 , :: runtime :: engine :: kernels :: Fc { inputs : 32 , outputs : 3 } , relu)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("pub const DIGEST : & str = \"{}\"", plan.digest)),
            "{text}"
        );
        assert!(text.contains("pub const EXITS : usize = 5"), "{text}");
        assert!(
            text.contains("pub const INPUT : [usize ; 3] = [1 , 4 , 4]"),
            "{text}"
        );
        assert!(
            text.contains("pub const NORMALIZATION_MEAN : & [f32] = & [0.1f32]"),
            "{text}"
        );
        assert!(
            text.contains("\"conv1\" , \"relu1\" , \"exit1.fc\""),
            "{text}"
        );
        assert!(
            text.contains(
                ":: runtime :: plan :: decide_tables (& FAMILIES , & FAMILIES_BY_ACCURACY"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_plan_file_is_included_by_its_absolute_path() {
        let (_, tokens) = expand_sample(2);
        let text = tokens.to_string();
        assert!(
            text.contains(":: core :: include_bytes ! (\"/project/generated/plan.json\")"),
            "{text}"
        );
    }

    #[test]
    fn tables_carry_every_pair_and_envelope_exactly() {
        let (plan, tokens) = expand_sample(5);
        let mut found = Vec::new();
        field_literals(
            tokens,
            &[
                "exit",
                "accuracy",
                "device_ms",
                "edge_ms",
                "bytes",
                "edge_ms_per_image",
                "from_x",
                "partition",
                "route",
            ],
            &mut found,
        );
        let mut expected: Vec<(String, String)> = Vec::new();
        let mut floats = Vec::new();
        for exit in &plan.exits {
            expected.push(("exit".into(), exit.exit.to_string()));
            expected.push(("accuracy".into(), String::new()));
            floats.push(exit.accuracy);
            for p in &exit.partitions {
                expected.push(("device_ms".into(), String::new()));
                expected.push(("edge_ms".into(), String::new()));
                expected.push(("bytes".into(), p.bytes.to_string()));
                expected.push(("edge_ms_per_image".into(), String::new()));
                floats.extend([p.device_ms, p.edge_ms, p.edge_ms_per_image]);
            }
        }
        fn route(r: &PlanRoute, expected: &mut Vec<(String, String)>, floats: &mut Vec<f64>) {
            expected.push(("partition".into(), r.partition.to_string()));
            expected.push(("device_ms".into(), String::new()));
            expected.push(("edge_ms".into(), String::new()));
            expected.push(("bytes".into(), r.bytes.to_string()));
            expected.push(("edge_ms_per_image".into(), String::new()));
            floats.extend([r.device_ms, r.edge_ms, r.edge_ms_per_image]);
        }
        let mut families = 0;
        for exit in &plan.exits {
            let exit_families = exit.families();
            assert_eq!(exit_families.len(), 2, "the exact family and q8's");
            for family in exit_families {
                families += 1;
                expected.push(("exit".into(), exit.exit.to_string()));
                expected.push(("accuracy".into(), String::new()));
                floats.push(family.accuracy);
                let segments = family_envelope(&family);
                assert_eq!(segments[0].0, 0.0);
                for r in family.routes.iter().filter(|r| r.encoding.is_some()) {
                    route(r, &mut expected, &mut floats);
                }
                for (from_x, i) in segments {
                    expected.push(("from_x".into(), String::new()));
                    expected.push(("route".into(), i.to_string()));
                    floats.push(from_x);
                }
                for r in family.routes.iter().filter(|r| r.encoding.is_none()) {
                    route(r, &mut expected, &mut floats);
                }
            }
        }
        assert_eq!(families, 10);
        assert_eq!(found.len(), expected.len(), "{found:?}");
        let mut floats = floats.into_iter();
        for ((name, lit), (want_name, want_int)) in found.iter().zip(&expected) {
            assert_eq!(name, want_name);
            if want_int.is_empty() {
                let want = floats.next().unwrap();
                assert_eq!(
                    parse_f64(lit).to_bits(),
                    want.to_bits(),
                    "{name}: {lit} vs {want:?}"
                );
            } else {
                assert_eq!(lit, want_int);
            }
        }
        // Each exit's envelope starts at 0.
        assert!(
            found
                .iter()
                .filter(|(n, l)| n == "from_x" && parse_f64(l) == 0.0)
                .count()
                >= 5
        );
    }

    #[test]
    fn awkward_floats_round_trip() {
        for v in [
            0.1 + 0.2,
            1.0 / 3.0,
            1e-300,
            f64::from_bits(1),
            1.5e-7,
            123_456_789.123_456_79,
            1e21,
            f64::MAX,
            0.0,
        ] {
            for v in [v, -v] {
                let text = f64_literal(v).to_string().replace(' ', "");
                assert_eq!(parse_f64(&text).to_bits(), v.to_bits(), "{text}");
            }
        }
        assert_eq!(f64_literal(0.0).to_string(), "0.0f64");
        assert_eq!(f64_literal(1.5e-7).to_string(), "1.5e-7f64");
        assert_eq!(f64_literal(-0.0).to_string(), "- 0.0f64");
        let text = f32_literal(0.1).to_string();
        let lit: syn::LitFloat = syn::parse_str(&text).unwrap();
        assert_eq!(lit.base10_parse::<f32>().unwrap(), 0.1_f32);
    }

    #[test]
    fn by_accuracy_puts_the_deeper_exit_first_on_ties() {
        let mut plan = sample_plan(5);
        for (exit, accuracy) in plan.exits.iter_mut().zip([0.6, 0.8, 0.8, 0.7, 0.9]) {
            exit.accuracy = accuracy;
        }
        assert_eq!(by_accuracy(&plan.exits), [4, 2, 1, 3, 0]);
        let text = expand(&plan, Path::new("/p.json")).to_string();
        assert!(
            text.contains("BY_ACCURACY : [usize ; EXITS] = [4 , 2 , 1 , 3 , 0]"),
            "{text}"
        );
    }

    #[test]
    fn a_broken_plan_still_expands_without_panicking() {
        let mut plan = sample_plan(1);
        plan.exits[0].accuracy = f64::NAN;
        plan.device_slowdown = f64::INFINITY;
        plan.normalization_std = vec![1e300];
        plan.exits[0].partitions.clear();
        plan.exits.push(PlanExit {
            exit: 2,
            accuracy: 0.5,
            layers: Vec::new(),
            partitions: Vec::new(),
        });
        let tokens = expand(&plan, Path::new("/p.json"));
        let text = tokens.to_string();
        assert!(text.contains("accuracy : f64 :: NAN"), "{text}");
        assert!(
            text.contains("DEVICE_SLOWDOWN : f64 = f64 :: INFINITY"),
            "{text}"
        );
        assert!(text.contains("& [f32 :: INFINITY]"), "{text}");
        syn::parse2::<syn::File>(tokens).unwrap();
    }
}
