//! Code generation: the unit struct, its inherent API (`call`, `name`, `new`, `result`) and its
//! `queue::Task` implementation. Generated code names only `::queue::...`, `::core` and `::std`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::Ident;
use syn::spanned::Spanned;

use crate::analysis::{Output, ParamKind, TaskFn};
use crate::options::{MaxRetries, Seconds, TaskOptions};

/// Everything `#[task]` emits for one function.
pub fn expand(task: &TaskFn, options: &TaskOptions) -> TokenStream {
    let ident = &task.item.sig.ident;
    let vis = &task.item.vis;
    let docs = &task.docs;
    let cfgs = &task.cfgs;
    let inherent = inherent_impl(task, options);
    let task_impl = task_impl(task, options);
    quote! {
        #(#cfgs)*
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(
            ::core::clone::Clone,
            ::core::marker::Copy,
            ::core::fmt::Debug,
            ::core::default::Default
        )]
        #vis struct #ident;

        #inherent

        #task_impl
    }
}

/// `add::call`, `add::name`, `add::new`, `add::result`.
fn inherent_impl(task: &TaskFn, options: &TaskOptions) -> TokenStream {
    let ident = &task.item.sig.ident;
    let vis = &task.item.vis;
    let cfgs = &task.cfgs;
    let others = &task.others;
    let mut call_sig = task.item.sig.clone();
    call_sig.ident = Ident::new("call", call_sig.ident.span());
    let body = &task.item.block;
    let success = task.output.success_type();

    let name_body = match &options.name {
        Some(name) => quote!(#name),
        None => {
            let suffix = format!(".{}", task.fn_name);
            quote! {
                static NAME: ::std::sync::OnceLock<::std::string::String> =
                    ::std::sync::OnceLock::new();
                NAME.get_or_init(|| {
                    let mut name = ::core::module_path!().replace("::", ".");
                    name.push_str(#suffix);
                    name
                })
            }
        }
    };

    let arguments: Vec<_> = task
        .params
        .iter()
        .filter(|param| matches!(param.kind, ParamKind::Argument { .. }))
        .collect();
    let new_params = arguments.iter().map(|param| {
        let (ident, ty) = (&param.ident, &param.ty);
        quote!(#ident: #ty)
    });
    let new_args = arguments.iter().map(|param| &param.ident);
    // `partial`: every argument but the first, which a chain's previous step (or a chord's
    // results) supplies when the task is applied, as Celery's `mul.s(2)` in a chain.
    let partial = arguments.split_first().map(|(_, rest)| {
        let params = rest.iter().map(|param| {
            let (ident, ty) = (&param.ident, &param.ty);
            quote!(#ident: #ty)
        });
        let args = rest.iter().map(|param| &param.ident);
        quote! {
            /// This task with every argument but the first, which the previous step of a
            /// chain (or, as a chord's body, the list of its header's results) supplies.
            #[must_use]
            #vis fn partial(#(#params),*) -> ::queue::TypedSignature<#success> {
                ::queue::TypedSignature::from_signature(
                    ::queue::Signature::new(Self::name()) #(.arg(#args))*
                )
            }
        }
    });
    let call_doc = format!(
        " Calls the function of task `{}` directly, in this process: no message, no worker.",
        task.fn_name
    );

    quote! {
        #(#cfgs)*
        #[allow(
            dead_code,
            clippy::too_many_arguments,
            clippy::new_ret_no_self,
            clippy::needless_pass_by_value,
            clippy::unused_async
        )]
        impl #ident {
            #[doc = #call_doc]
            #(#others)*
            #vis #call_sig #body

            /// The name the task is registered and sent under.
            #vis fn name() -> &'static str {
                #name_body
            }

            /// A call of this task with these arguments, to send with `.send(&app)`; options
            /// (queue, priority, countdown, ...) can be set on it first.
            #[must_use]
            #vis fn new(#(#new_params),*) -> ::queue::TypedSignature<#success> {
                ::queue::TypedSignature::from_signature(
                    ::queue::Signature::new(Self::name()) #(.arg(#new_args))*
                )
            }

            #partial

            /// A typed handle on the result of this task's run with id `id`.
            #vis fn result(
                app: &::queue::App,
                id: impl ::core::convert::Into<::std::string::String>,
            ) -> ::queue::AsyncResult<#success> {
                ::queue::AsyncResult::new(::core::clone::Clone::clone(app), id.into())
            }
        }
    }
}

/// `impl ::queue::Task for add`.
fn task_impl(task: &TaskFn, options: &TaskOptions) -> TokenStream {
    let ident = &task.item.sig.ident;
    let cfgs = &task.cfgs;
    let options_fn = options_fn(options);
    let run_body = run_body(task, options);
    let uses_context = task
        .params
        .iter()
        .any(|param| matches!(param.kind, ParamKind::Context { .. }));
    // A sync body needs the context to count itself as running (see `run_blocking`).
    let is_sync = task.item.sig.asyncness.is_none();
    let context = if uses_context || is_sync {
        quote!(__context)
    } else {
        quote!(_)
    };
    let context = respan_mixed(context);
    let arguments = format_ident!("__arguments", span = Span::mixed_site());
    quote! {
        #(#cfgs)*
        #[allow(clippy::useless_conversion, clippy::needless_update)]
        impl ::queue::Task for #ident {
            fn name(&self) -> &'static str {
                <#ident>::name()
            }

            #options_fn

            fn run(
                &self,
                #context: ::queue::TaskContext,
                #arguments: ::queue::Arguments,
            ) -> ::queue::__private::BoxFuture<
                'static,
                ::core::result::Result<::queue::__private::Value, ::queue::TaskError>,
            > {
                ::std::boxed::Box::pin(async move { #run_body })
            }
        }
    }
}

/// Gives every token of `tokens` the mixed-site span, so that locals do not clash with the
/// user's parameter names.
fn respan_mixed(tokens: TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            token.set_span(Span::mixed_site());
            token
        })
        .collect()
}

/// `fn options(&self) -> TaskOptions`, or nothing when every option keeps its default.
fn options_fn(options: &TaskOptions) -> TokenStream {
    let duration = |seconds: &Seconds| {
        let (secs, nanos) = (seconds.secs, seconds.nanos);
        quote!(::queue::__private::Duration::new(#secs, #nanos))
    };
    let some = |value: TokenStream| quote!(::core::option::Option::Some(#value));

    let mut retry = Vec::new();
    if let Some(max_retries) = options.max_retries {
        let value = match max_retries {
            MaxRetries::Limited(count) => some(quote!(#count)),
            MaxRetries::Unlimited => quote!(::core::option::Option::None),
        };
        retry.push(quote!(max_retries: #value));
    }
    if let Some(delay) = &options.retry_delay {
        let value = duration(delay);
        retry.push(quote!(delay: #value));
    }
    if let Some(backoff) = options.retry_backoff {
        retry.push(quote!(backoff: #backoff));
    }
    if let Some(max) = &options.retry_backoff_max {
        let value = duration(max);
        retry.push(quote!(backoff_max: #value));
    }
    if let Some(jitter) = options.retry_jitter {
        retry.push(quote!(jitter: #jitter));
    }

    let mut fields = Vec::new();
    if let Some(queue) = &options.queue {
        let value = some(quote!(::std::string::String::from(#queue)));
        fields.push(quote!(queue: #value));
    }
    if let Some(priority) = options.priority {
        let value = some(quote!(#priority));
        fields.push(quote!(priority: #value));
    }
    if !retry.is_empty() {
        fields.push(quote! {
            retry: ::queue::RetryPolicy {
                #(#retry,)*
                ..::core::default::Default::default()
            }
        });
    }
    for (field, flag) in [
        ("acks_late", options.acks_late),
        ("ignore_result", options.ignore_result),
        ("track_started", options.track_started),
    ] {
        if let Some(flag) = flag {
            let field = Ident::new(field, Span::call_site());
            fields.push(quote!(#field: #flag));
        }
    }
    for (field, limit) in [
        ("time_limit", &options.time_limit),
        ("soft_time_limit", &options.soft_time_limit),
    ] {
        if let Some(limit) = limit {
            let field = Ident::new(field, Span::call_site());
            let value = some(duration(limit));
            fields.push(quote!(#field: #value));
        }
    }
    if let Some(rate) = options.rate_limit {
        let (count, period) = (rate.count, rate.period_secs);
        let value = some(quote! {
            ::queue::RateLimit {
                count: #count,
                period: ::queue::__private::Duration::from_secs(#period),
            }
        });
        fields.push(quote!(rate_limit: #value));
    }

    if fields.is_empty() {
        return TokenStream::new();
    }
    quote! {
        fn options(&self) -> ::queue::TaskOptions {
            ::queue::TaskOptions {
                #(#fields,)*
                ..::core::default::Default::default()
            }
        }
    }
}

/// The body of the future `run` returns: decode the arguments, call the function (on the
/// threads of `run_blocking` when it is sync), turn a panic into `TaskError::panicked`, encode the output.
fn run_body(task: &TaskFn, options: &TaskOptions) -> TokenStream {
    let mixed = |name: &str| Ident::new(name, Span::mixed_site());
    let arguments = mixed("__arguments");
    let context = mixed("__context");
    let outcome = mixed("__outcome");
    let payload = mixed("__payload");
    let sync_guard = mixed("__sync_guard");
    let panic_message = mixed("__panic_message");

    let decode = task.params.iter().filter_map(|param| match &param.kind {
        ParamKind::Argument { index, name } => {
            let (ident, ty) = (&param.ident, &param.ty);
            Some(quote_spanned! {ty.span()=>
                let #ident: #ty = #arguments.take::<#ty>(#index, #name)?;
            })
        }
        ParamKind::Context { .. } => None,
    });
    let count = task.argument_count;
    let call_args = task.params.iter().map(|param| match param.kind {
        ParamKind::Argument { .. } => {
            let ident = &param.ident;
            quote!(#ident)
        }
        ParamKind::Context { by_ref: true } => quote!(&#context),
        ParamKind::Context { by_ref: false } => quote!(::core::clone::Clone::clone(&#context)),
    });
    let call = quote!(Self::call(#(#call_args),*));

    let (binding, finish) = finish(task, options, &outcome);
    let panic_message_fn = quote! {
        fn #panic_message(
            payload: &(dyn ::core::any::Any + ::core::marker::Send),
        ) -> ::std::string::String {
            if let ::core::option::Option::Some(text) = payload.downcast_ref::<&'static str>() {
                ::std::string::ToString::to_string(*text)
            } else if let ::core::option::Option::Some(text) = payload.downcast_ref::<::std::string::String>() {
                ::core::clone::Clone::clone(text)
            } else {
                ::std::string::String::from("the task panicked")
            }
        }
    };
    let invoke = if task.item.sig.asyncness.is_some() {
        quote! {
            match ::queue::__private::FutureExt::catch_unwind(
                ::std::panic::AssertUnwindSafe(#call),
            ).await {
                ::core::result::Result::Ok(#binding) => #finish,
                ::core::result::Result::Err(#payload) => ::core::result::Result::Err(
                    ::queue::TaskError::panicked(#panic_message(&*#payload)),
                ),
            }
        }
    } else {
        quote! {
            let #sync_guard = ::queue::TaskContext::enter_sync_code(&#context);
            match ::queue::__private::run_blocking(#sync_guard, move || #call).await {
                ::core::result::Result::Ok(#binding) => #finish,
                ::core::result::Result::Err(#payload) => ::core::result::Result::Err(
                    ::queue::TaskError::panicked(#panic_message(&*#payload)),
                ),
            }
        }
    };
    quote! {
        #panic_message_fn
        let mut #arguments = #arguments;
        #(#decode)*
        #arguments.finish(#count)?;
        #invoke
    }
}

/// The pattern the function's output is bound to, and the expression that turns it into the
/// `Result<Value, TaskError>` of `run`, applying `retry_on`.
fn finish(task: &TaskFn, options: &TaskOptions, outcome: &Ident) -> (TokenStream, TokenStream) {
    let ok = |value: TokenStream| quote!(::core::result::Result::Ok(#value));
    match &task.output {
        Output::Unit => (quote!(()), ok(quote!(::queue::__private::Value::Null))),
        Output::Value(_) => (
            quote!(#outcome),
            quote!(::queue::__private::encode_output(&#outcome)),
        ),
        Output::Result { ok: ok_ty, error } => {
            let value = Ident::new("__value", Span::mixed_site());
            let error_value = Ident::new("__error", Span::mixed_site());
            let task_error = Ident::new("__task_error", Span::mixed_site());
            let error_span = error.as_ref().map_or(ok_ty.span(), Spanned::span);
            let convert = quote_spanned! {error_span=>
                let #task_error = <::queue::TaskError as ::core::convert::From<_>>::from(#error_value);
            };
            let on_error = match &options.retry_on {
                Some(retry_on) => {
                    let predicate = &retry_on.predicate;
                    let retry = Ident::new("__retry", Span::mixed_site());
                    let decide = quote_spanned! {predicate.span()=>
                        let #retry: bool = (#predicate)(&#error_value);
                    };
                    quote! {
                        #decide
                        #convert
                        ::core::result::Result::Err(if #retry {
                            #task_error.into_retry()
                        } else {
                            #task_error
                        })
                    }
                }
                None => quote! {
                    #convert
                    ::core::result::Result::Err(#task_error)
                },
            };
            let finish = quote! {
                match #outcome {
                    ::core::result::Result::Ok(#value) => ::queue::__private::encode_output(&#value),
                    ::core::result::Result::Err(#error_value) => { #on_error }
                }
            };
            (quote!(#outcome), finish)
        }
    }
}
