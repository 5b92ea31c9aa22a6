"""The prompts of EleutherAI's delphi (Apache-2.0), verbatim: its default explainer (with activations,
no chain of thought) and its detection and fuzzing scorers (``explainers/default/prompts.py``,
``scorers/classifier/prompts/{detection,fuzz}_prompt.py``). Text only; ``interp.explain.llm`` builds the
chat messages from them as delphi's prompt builders do."""

EXPLAINER_SYSTEM = "You are a meticulous AI researcher conducting an important investigation into patterns found in language. Your task is to analyze text and provide an explanation that thoroughly encapsulates possible patterns found in it.\nGuidelines:\n\nYou will be given a list of text examples on which special words are selected and between delimiters like <<this>>. If a sequence of consecutive tokens all are important, the entire sequence of tokens will be contained between delimiters <<just like this>>. How important each token is for the behavior is listed after each example in parentheses.\n\n- Try to produce a concise final description. Simply describe the text latents that are common in the examples, and what patterns you found.\n- If the examples are uninformative, you don't need to mention them. Don't focus on giving examples of important tokens, but try to summarize the patterns found in the examples.\n- Do not mention the marker tokens (<< >>) in your explanation.\n- Do not make lists of possible explanations. Keep your explanations short and concise.\n- The last line of your response must be the formatted explanation, using [EXPLANATION]:\n\n\n"

EXPLAINER_EXAMPLES = [
    [
        '\nExample 1:  and he was <<over the moon>> to find\nActivations: ("over", 5), (" the", 6), (" moon", 9)\nExample 2:  we\'ll be laughing <<till the cows come home>>! Pro\nActivations: ("till", 5), (" the", 5), (" cows", 8), (" come", 8), (" home", 8)\nExample 3:  thought Scotland was boring, but really there\'s more <<than meets the eye>>! I\'d\nActivations: ("than", 5), (" meets", 7), (" the", 6), (" eye", 8)\n',
        "\n[EXPLANATION]: Common idioms in text conveying positive sentiment.\n",
    ],
    [
        '\nExample 1:  a river is wide but the ocean is wid<<er>>. The ocean\nActivations: ("er", 8)\nExample 2:  every year you get tall<<er>>," she\nActivations: ("er", 2)\nExample 3:  the hole was small<<er>> but deep<<er>> than the\nActivations: ("er", 9), ("er", 9)\n',
        '\n[EXPLANATION]: The token "er" at the end of a comparative adjective describing size.\n',
    ],
    [
        '\nExample 1:  something happening inside my <<house>>", he\nActivations: ("house", 7)\nExample 2:  presumably was always contained in <<a box>>", according\nActivations: ("a", 5), ("box", 9)\nExample 3:  people were coming into the <<smoking area>>".\n\nHowever he\nActivations: ("smoking", 2), ("area", 4)\nExample 4:  Patrick: "why are you getting in the << way?>>" Later,\nActivations: ("way", 4), ("?", 2)\n',
        "\n[EXPLANATION]: Nouns representing a distinct objects that contains something, sometimes preciding a quotation mark.\n",
    ],
]

DETECTION_SYSTEM = 'You are an intelligent and meticulous linguistics researcher.\n\nYou will be given a certain latent of text, such as "male pronouns" or "text with negative sentiment".\n\nYou will then be given several text examples. Your task is to determine which examples possess the latent.\n\nFor each example in turn, return 1 if the sentence is correctly labeled or 0 if the tokens are mislabeled. You must return your response in a valid Python list. Do not return anything else besides a Python list.\n'

DETECTION_EXAMPLES = [
    [
        "Latent explanation: Words related to American football positions, specifically the tight end position.\n\nTest examples:\n\nExample 0:<|endoftext|>Getty ImagesĊĊPatriots tight end Rob Gronkowski had his bossâĢĻ\nExample 1: names of months used in The Lord of the Rings:ĊĊâĢľâĢ¦the\nExample 2: Media Day 2015ĊĊLSU defensive end Isaiah Washington (94) speaks to the\nExample 3: shown, is generally not eligible for ads. For example, videos about recent tragedies,\nExample 4: line, with the left side âĢĶ namely tackle Byron Bell at tackle and guard Amini\n",
        "[1,0,0,0,1]",
    ],
    [
        'Latent explanation: The word "guys" in the phrase "you guys".\n\nTest examples:\n\nExample 0: enact an individual health insurance mandate?âĢĿ, Pelosi\'s response was to dismiss both\nExample 1: birth control access<|endoftext|> but I assure you women in Kentucky aren\'t laughing as they struggle\nExample 2: du Soleil Fall Protection Program with construction requirements that do not apply to theater settings because\nExample 3:Ċ<|endoftext|> distasteful. Amidst the slime lurk bits of Schadenfre\nExample 4: the<|endoftext|>ľI want to remind you all that 10 days ago (director Massimil\n',
        "[0,0,0,0,0]",
    ],
    [
        'Latent explanation: "of" before words that start with a capital letter.\n\nTest examples:\n\nExample 0: climate, TomblinâĢĻs Chief of Staff Charlie Lorensen said.Ċ\nExample 1: no wonderworking relics, no true Body and Blood of Christ, no true Baptism\nExample 2:ĊĊDeborah Sathe, Head of Talent Development and Production at Film London,\nExample 3:ĊĊIt has been devised by Director of Public Prosecutions (DPP)\nExample 4: and fair investigation not even include the Director of Athletics? Â· Finally, we believe the\n',
        "[1,1,1,1,1]",
    ],
]

FUZZING_SYSTEM = 'You are an intelligent and meticulous linguistics researcher.\n\nYou will be given a certain latent of text, such as "male pronouns" or "text with negative sentiment". You will be given a few examples of text that contain this latent. Portions of the sentence which strongly represent this latent are between tokens << and >>.\n\nSome examples might be mislabeled. Your task is to determine if every single token within << and >> is correctly labeled. Consider that all provided examples could be correct, none of the examples could be correct, or a mix. An example is only correct if every marked token is representative of the latent\n\nFor each example in turn, return 1 if the sentence is correctly labeled or 0 if the tokens are mislabeled. You must return your response in a valid Python list. Do not return anything else besides a Python list.\n'

FUZZING_EXAMPLES = [
    [
        'Latent explanation: Words related to American football positions, specifically the tight end position.\n\nTest examples:\n\nExample 0:<|endoftext|>Getty ImagesĊĊPatriots<< tight end>> Rob Gronkowski had his bossâĢĻ\nExample 1: posted<|endoftext|>You should know this<< about>> offensive line coaches: they are large, demanding<< men>>\nExample 2: Media Day 2015ĊĊLSU<< defensive>> end Isaiah Washington (94) speaks<< to the>>\nExample 3:<< running backs>>," he said. .. Defensive<< end>> Carroll Phillips is improving and his injury is\nExample 4:<< line>>, with the left side âĢĶ namely<< tackle>> Byron Bell at<< tackle>> and<< guard>> Amini\n',
        "[1,0,0,1,1]",
    ],
    [
        'Latent explanation: The word "guys" in the phrase "you guys".\n\nTest examples:\n\nExample 0: if you are<< comfortable>> with it. You<< guys>> support me in many other ways already and\nExample 1: birth control access<|endoftext|> but I assure you<< women>> in Kentucky aren\'t laughing as they struggle\nExample 2:âĢĻs gig! I hope you guys<< LOVE>> her, and<< please>> be nice,\nExample 3:American, told<< Hannity>> that âĢľyou<< guys>> are playing the race card.âĢĿ\nExample 4:<< the>><|endoftext|>ľI want to<< remind>> you all that 10 days ago (director Massimil\n',
        "[0,0,0,0,0]",
    ],
    [
        'Latent explanation: "of" before words that start with a capital letter.\n\nTest examples:\n\nExample 0: climate, TomblinâĢĻs Chief<< of>> Staff Charlie Lorensen said.Ċ\nExample 1: no wonderworking relics, no true Body and Blood<< of>> Christ, no true Baptism\nExample 2:ĊĊDeborah Sathe, Head<< of>> Talent Development and Production at Film London,\nExample 3:ĊĊIt has been devised by Director<< of>> Public Prosecutions (DPP)\nExample 4: and fair investigation not even include the Director<< of>> Athletics? Â· Finally, we believe the\n',
        "[1,1,1,1,1]",
    ],
]

SCORER_PROMPT = "Latent explanation: {explanation}\n\nText examples:\n\n{examples}\n"
